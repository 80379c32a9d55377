/**
 * A promise that resolves once `signal` is aborted (at once if it already is), never without a signal: for racing
 * a wait against a stop request. The listener is removed when the signal fires; a signal that never fires keeps one
 * listener per call, so call it once per wait, not in a hot loop.
 */
export function whenAborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) resolve();
    else signal?.addEventListener("abort", () => resolve(), { once: true });
  });
}
