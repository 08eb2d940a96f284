"""drift: prove that random 1:1 video chat peers get matched and connected.

Error tree (bad *client input* is never an exception: the core answers it with
an ``error`` frame)::

    DriftError
    ├── ConfigError          bad flag, environment variable or scenario file
    ├── TargetUnreachable    the server under test cannot be reached
    └── CheckFailed          a run finished and its verdict is "fail"
"""

__version__ = "0.1.0"
