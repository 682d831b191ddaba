// Package periskope is a client for the Periskope WhatsApp API's list-queue-jobs
// endpoint (POST {BaseURL}/message/queues), which reports the state of the
// messages a connected phone has queued, sent or failed.
//
// The client is deliberately small: one request per [Client.ListJobs] call,
// a per-request timeout, a cap on the response size and a tolerant decoder
// (the API's documentation is thin and inconsistent; see the "Open questions"
// of the API contract notes). It never retries by itself. The caller owns
// retries and backoff and decides with the typed errors:
//
//   - [*StatusError] for any non-2xx answer, with the server's Retry-After;
//   - [*DecodeError] for a 2xx body that is not a usable job list;
//   - [ErrBodyTooLarge] for a body over [Options.MaxBodyBytes];
//   - [Retryable] and [RetryAfter] to classify any returned error.
//
// Items of an otherwise good response that cannot be used are reported in
// [Result.Invalid]; they never hide the other jobs.
//
// The API key is a secret: it is sent only in the Authorization header and
// never appears in an error string (response text echoed by a server is
// redacted), nor in the printed form of [Options] or [Client].
package periskope
