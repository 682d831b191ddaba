package periskope

import (
	"encoding/json"
	"time"
)

// Target is what one poll asks for: every job of a phone, or only the jobs
// of one broadcast or one queued send of that phone.
type Target struct {
	// Phone is sent as the x-phone header, unchanged: a number with country
	// code ("918527184400") or a phone id ("phone-…").
	Phone string
	// BroadcastID, when set, narrows the poll to that broadcast.
	BroadcastID string
	// QueueID, when set, narrows the poll to that one job.
	QueueID string
}

// String names the target for logs and keys: "phone", "phone/broadcast/<id>"
// or "phone/queue/<id>".
func (t Target) String() string {
	switch {
	case t.QueueID != "":
		return t.Phone + "/queue/" + t.QueueID
	case t.BroadcastID != "":
		return t.Phone + "/broadcast/" + t.BroadcastID
	default:
		return t.Phone
	}
}

// Job is one queue job as the API returned it, decoded tolerantly.
// Every field but QueueID may be empty: the API omits fields it does not
// know yet (message_id before sending, sent_at while queued, …).
type Job struct {
	QueueID           string
	UniqueID          string
	MessageID         string
	ChatID            string
	BroadcastID       string
	PerformedBy       string
	Status            string // verbatim, lower-cased and trimmed; unknown values are kept
	StatusDescription string
	Attempts          int
	// Ack is the WhatsApp ack level when the API sent one (-1..5), else nil.
	Ack *int
	// Timeline holds the timestamps the API sent, by key ("queued_at",
	// "sent_at", …), normalised to UTC. Keys that did not parse are left out.
	Timeline map[string]time.Time
	// Raw is the item exactly as the API returned it.
	Raw json.RawMessage
}
