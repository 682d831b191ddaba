// Package events is the public contract of queuewatch: the
// queue.job.status_changed event that downstream services consume, its
// subjects and headers, and a strict decoder.
//
// Events are CloudEvents 1.0 in structured mode: the NATS message payload is
// the JSON document, and the message carries a Nats-Msg-Id header equal to
// the event id. The id is stable for a transition (phone, queue_id, status,
// attempts), so a JetStream consumer of the stream sees each transition once,
// while a core NATS subscriber may see a repeat and should drop ids it has
// already handled.
//
// [Subscribe] consumes the events through a durable JetStream consumer, with
// redelivery and backoff on handler errors. [Schema] is the JSON Schema of
// the payload and [ValidatePayload] checks a payload against it. The
// contract in prose is docs/events.md; docs/asyncapi.json describes the NATS
// channels.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Wire names. They are a contract other teams build on.
const (
	// Subject is the default subject events are published on.
	Subject = "queue.job.status_changed"
	// Stream is the default JetStream stream that captures the events.
	Stream = "QUEUE_JOB_EVENTS"
	// Type is the CloudEvents type of every event.
	Type = "queue.job.status_changed"
	// SpecVersion is the CloudEvents version.
	SpecVersion = "1.0"
	// ContentType is the content type of a structured-mode event.
	ContentType = "application/cloudevents+json"
	// DataContentType is the content type of the event's data.
	DataContentType = "application/json"
	// SourcePrefix precedes the phone in the source attribute.
	SourcePrefix = "periskope/phones/"
)

// Header names set on every event message.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderContentType = "Content-Type"
	HeaderType        = "ce-type"
	HeaderID          = "ce-id"
	HeaderPhone       = "queuewatch-phone"
	HeaderStatus      = "queuewatch-status"
)

// Event is one queue.job.status_changed CloudEvent.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	Type            string    `json:"type"`
	Source          string    `json:"source"`
	ID              string    `json:"id"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject"`
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Data is the payload of an Event: the job as it is now and the status it
// left. PreviousStatus is "" for a job seen for the first time; Attempts is
// 0 when the API did not say.
type Data struct {
	Phone             string               `json:"phone"`
	QueueID           string               `json:"queue_id"`
	UniqueID          string               `json:"unique_id"`
	MessageID         string               `json:"message_id"`
	ChatID            string               `json:"chat_id"`
	BroadcastID       string               `json:"broadcast_id,omitempty"`
	PreviousStatus    string               `json:"previous_status"`
	Status            string               `json:"status"`
	StatusDescription string               `json:"status_description"`
	Attempts          int                  `json:"attempts"`
	Timeline          map[string]time.Time `json:"timeline"`
	ObservedAt        time.Time            `json:"observed_at"`
	// Job is the item exactly as the Periskope API returned it.
	Job json.RawMessage `json:"job"`
}

// New builds the event for data observed at data.ObservedAt, with the given
// stable id.
func New(id string, data Data) Event {
	if data.Timeline == nil {
		data.Timeline = map[string]time.Time{}
	}
	if len(data.Job) == 0 {
		data.Job = json.RawMessage("{}")
	}
	return Event{
		SpecVersion:     SpecVersion,
		Type:            Type,
		Source:          SourcePrefix + data.Phone,
		ID:              id,
		Time:            data.ObservedAt,
		Subject:         data.QueueID,
		DataContentType: DataContentType,
		Data:            data,
	}
}

// ErrInvalid is wrapped by every error Decode returns for a message that is
// not a valid event.
var ErrInvalid = errors.New("events: invalid event")

// Decode parses and checks one event payload. Unknown fields are allowed
// (the contract may grow); missing required ones are an error naming them.
func Decode(payload []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(payload, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Validate reports the first attribute of e that breaks the contract.
func (e Event) Validate() error {
	var missing []string
	check := func(name, v string) {
		if v == "" {
			missing = append(missing, name)
		}
	}
	check("id", e.ID)
	check("source", e.Source)
	check("subject", e.Subject)
	check("data.phone", e.Data.Phone)
	check("data.queue_id", e.Data.QueueID)
	check("data.status", e.Data.Status)
	if e.Time.IsZero() {
		missing = append(missing, "time")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrInvalid, strings.Join(missing, ", "))
	}
	switch {
	case e.SpecVersion != SpecVersion:
		return fmt.Errorf("%w: specversion %q, want %q", ErrInvalid, e.SpecVersion, SpecVersion)
	case e.Type != Type:
		return fmt.Errorf("%w: type %q, want %q", ErrInvalid, e.Type, Type)
	case e.Source != SourcePrefix+e.Data.Phone:
		return fmt.Errorf("%w: source %q does not match data.phone %q", ErrInvalid, e.Source, e.Data.Phone)
	case e.Subject != e.Data.QueueID:
		return fmt.Errorf("%w: subject %q does not match data.queue_id %q", ErrInvalid, e.Subject, e.Data.QueueID)
	}
	return nil
}

// DetailSubject is the subject of an event in detail mode:
// <root>.<phone>.<status>, so that consumers can filter on the server.
// Characters a subject token cannot hold are replaced by '_'.
func DetailSubject(root, phone, status string) string {
	return root + "." + token(phone) + "." + token(status)
}

func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			return '_'
		}
		return r
	}, s)
}
