// Package worker runs queuewatch's poll loops: one goroutine per target
// polls the Periskope API on an interval, diffs each job against its stored
// snapshot and, for every real transition, publishes an event and only then
// commits the new snapshot.
//
// Delivery is at-least-once with stable event ids. Because the commit comes
// after the publish is acknowledged, a crash or shutdown between the two
// re-derives the same event (same id) on the next poll, and the stream's
// duplicate window drops it. Commits are compare-and-set on the snapshot's
// revision, so a replica that lost a race re-reads and decides again instead
// of publishing blindly.
//
// Errors from the API or NATS fail the poll: nothing after the failure is
// committed, and the loop retries with exponential backoff and jitter,
// never sooner than the API's Retry-After, and with a long backoff while the
// API rejects the credentials.
package worker
