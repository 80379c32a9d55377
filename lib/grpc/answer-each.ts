/**
 * The server side of a bidi stream where every request gets exactly one response: `answerEach` reads the requests,
 * answers them concurrently and yields the responses in the order they finish (each carries its request's id, so the
 * client matches them). Back-pressure: at most `maxInFlight` answers are pending on one stream; reading pauses until
 * one finishes, and HTTP/2 flow control pushes back on the client. The generator's Generate/Score and the oracle's
 * Compare answer through it.
 *
 * Rules: the stream ends once the input has ended and every answer went out; a cancelled call ends at once and stops
 * reading; a broken request stream ends the call with its error after the answers already made. `answer` turns a
 * request's failure into a response; if it throws anyway (a bug), the call ends with that error rather than hang.
 */

/**
 * Answers each request of `requests` with `answer`, concurrently, yielding responses as they finish.
 *
 * Example: `generate: (requests, context) => answerEach(requests, context, 64, (r) => generator.generate(r, context.signal))`
 * @param context the call's context: its signal ends the stream when the call is cancelled
 * @param maxInFlight answers pending at once on this stream before reading pauses
 * @param answer the response to one request (failures become responses with `error` set)
 * @return the responses, in the order they finish
 */
export async function* answerEach<Req, Res>(
  requests: AsyncIterable<Req>,
  context: { readonly signal: AbortSignal },
  maxInFlight: number,
  answer: (request: Req) => Promise<Res>,
): AsyncGenerator<Res> {
  if (!(Number.isInteger(maxInFlight) && maxInFlight >= 1)) throw new TypeError(`maxInFlight: must be a positive integer, got ${maxInFlight}`);
  const { signal } = context;
  const ready: Res[] = [];
  let inFlight = 0;
  let inputDone = false;
  let stopped = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  let resumeReading: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const settle = () => {
    inFlight--;
    resumeReading?.();
    notify();
  };
  signal.addEventListener("abort", notify, { once: true });
  const iterator = requests[Symbol.asyncIterator]();
  // Reads requests while the loop below yields responses.
  void (async () => {
    try {
      while (!signal.aborted && !stopped) {
        const next = await iterator.next();
        if (next.done) break;
        inFlight++;
        answer(next.value).then(
          (response) => {
            ready.push(response);
            settle();
          },
          (err: unknown) => {
            failure ??= { error: err };
            settle();
          },
        );
        while (inFlight >= maxInFlight && !signal.aborted && !stopped) {
          await new Promise<void>((resolve) => {
            resumeReading = resolve;
          });
          resumeReading = undefined;
        }
      }
    } catch (err) {
      failure ??= { error: err };
    } finally {
      inputDone = true;
      notify();
    }
  })();
  try {
    for (;;) {
      while (ready.length > 0) yield ready.shift() as Res;
      if (signal.aborted) return;
      if (failure) throw failure.error;
      if (inputDone && inFlight === 0) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    stopped = true;
    signal.removeEventListener("abort", notify);
    resumeReading?.();
    // Answers are no longer wanted (cancelled, failed, or the consumer stopped): stop reading the requests too.
    if (!inputDone) void iterator.return?.()?.catch(() => {});
  }
}
