// Package periskopetest is an in-process fake of the Periskope API's
// list-queue-jobs endpoint (POST /v1/message/queues), for tests and for
// the "queuewatch demo" command. It is a normal package (not a _test file)
// so other packages and commands can use it.
//
// A [Server] keeps jobs per phone (the x-phone header) and answers with the
// documented item shape. The docs list only 200 responses; the error
// conventions below are this simulator's own choices:
//
//   - 401 {"message":"invalid api key"} for a missing or wrong bearer token;
//   - 400 for a missing x-phone header or a request body that is not a JSON
//     object with string queue_id/broadcast_id (an empty body is accepted);
//   - 405 (with Allow: POST) for a method other than POST;
//   - 404 for any other path.
//
// A request is handled in this order: logged; offered to the [Server.Intercept]
// hook; failed by [Server.FailNext]; then path, method, auth, x-phone and
// body checks; then the job list. Every response is JSON.
//
// A [Simulator] moves the jobs of a Server through realistic states, for a
// live-looking demo or for tests that need changing data.
package periskopetest
