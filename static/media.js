// Camera and microphone, degrading instead of failing: a chat partner can
// still be met with audio only, or even receive-only, and the page says why.

const REASONS = {
  NotAllowedError: "permission was denied",
  SecurityError: "the browser blocked it",
  NotFoundError: "no device was found",
  OverconstrainedError: "no device fits",
  NotReadableError: "the device is busy or broken",
  AbortError: "the device could not start",
};

function reason(error) {
  if (error && REASONS[error.name]) return REASONS[error.name];
  return (error && error.message) || "it is unavailable";
}

/**
 * @returns {Promise<{stream: MediaStream|null, mode: "full"|"audio-only"|"receive-only",
 *                    reason: string}>}
 */
export async function openMedia() {
  const devices = navigator.mediaDevices;
  if (!devices || typeof devices.getUserMedia !== "function") {
    // Browsers hide getUserMedia outside secure contexts (plain http on a
    // non-localhost host), which is the usual cause in practice.
    return {
      stream: null,
      mode: "receive-only",
      reason: "Receive-only: this page needs HTTPS to use a camera or microphone.",
    };
  }
  let videoError;
  try {
    const stream = await devices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    return { stream, mode: "full", reason: "" };
  } catch (error) {
    videoError = error;
  }
  try {
    const stream = await devices.getUserMedia({ audio: true });
    return {
      stream,
      mode: "audio-only",
      reason: `Audio only: camera unavailable (${reason(videoError)}).`,
    };
  } catch (error) {
    return {
      stream: null,
      mode: "receive-only",
      reason: `Receive-only: no camera or microphone (${reason(error)}).`,
    };
  }
}

export function stopMedia(stream) {
  if (stream) for (const track of stream.getTracks()) track.stop();
}
