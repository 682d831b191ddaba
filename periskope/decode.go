package periskope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wrapperKeys are the keys under which an object-wrapped response may hold
// its job array, in order of preference. The docs show a bare array; these
// are tolerated in case the API (or a proxy) wraps it.
var wrapperKeys = [...]string{"jobs", "data", "items", "results", "queues"}

// wrapper is the object form of a response. Fields stay raw: only the one
// holding the array is decoded further.
type wrapper struct {
	Jobs    json.RawMessage `json:"jobs"`
	Data    json.RawMessage `json:"data"`
	Items   json.RawMessage `json:"items"`
	Results json.RawMessage `json:"results"`
	Queues  json.RawMessage `json:"queues"`
}

// wireJob is one item as sent by POST /message/queues, plus the fields of
// the legacy GET /queue/jobs shape. Plain string fields accept a string or
// null; the raw ones are decoded by hand because the API is inconsistent
// about their types.
type wireJob struct {
	QueueID           string          `json:"queue_id"`
	UniqueID          string          `json:"unique_id"`
	MessageID         string          `json:"message_id"`
	ChatID            string          `json:"chat_id"`
	BroadcastID       string          `json:"broadcast_id"`
	PerformedBy       string          `json:"performed_by"`
	Status            string          `json:"status"`
	StatusDescription string          `json:"status_description"`
	Attempts          json.RawMessage `json:"attempts"`
	Ack               json.RawMessage `json:"ack"`
	Timeline          json.RawMessage `json:"timeline"`

	// Legacy shape (GET /queue/jobs, a BullMQ job): id is the queue id,
	// attemptsMade the attempts, data.chat_id the chat.
	ID           json.RawMessage `json:"id"`
	AttemptsMade json.RawMessage `json:"attemptsMade"`
	Data         json.RawMessage `json:"data"`
}

var errMissingQueueID = errors.New("missing queue_id")

// decode turns a 2xx response body into a Result. A body that is not a job
// list is a *DecodeError (its snippet with secret redacted); bad items are
// reported in Result.Invalid.
func decode(body []byte, contentType, secret string) (*Result, error) {
	items, err := topLevelItems(body, secret)
	if err != nil {
		return nil, &DecodeError{
			ContentType: mediaType(contentType),
			Snippet:     sanitize(body[:min(len(body), bodySnippetLen+len(secret))], bodySnippetLen, secret),
			Err:         err,
		}
	}
	res := &Result{Jobs: make([]Job, 0, len(items))}
	for i, raw := range items {
		j, err := decodeItem(raw)
		if err != nil {
			ie := ItemError{Index: i, QueueID: j.QueueID, Err: err}
			if secret != "" && strings.Contains(ie.Error(), secret) { // a server echoing the key
				ie.QueueID = redact(ie.QueueID, secret)
				ie.Err = errors.New(redact(err.Error(), secret))
			}
			res.Invalid = append(res.Invalid, ie)
			continue
		}
		res.Jobs = append(res.Jobs, j)
	}
	return res, nil
}

// topLevelItems finds the job array: a bare array, null, or an array (or
// null) under one of wrapperKeys of an object. Each element is a fresh copy
// of its bytes (json.RawMessage copies on unmarshal), so it is safe to keep
// after body is reused.
func topLevelItems(body []byte, secret string) ([]json.RawMessage, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, errors.New("empty body")
	}
	var items []json.RawMessage
	switch trimmed[0] {
	case '[', 'n':
		if err := json.Unmarshal(body, &items); err != nil {
			return nil, jsonErr(err)
		}
		return items, nil
	case '{':
		var w wrapper
		if err := json.Unmarshal(body, &w); err != nil {
			return nil, jsonErr(err)
		}
		return wrappedItems(body, &w, secret)
	}
	if err := json.Unmarshal(body, new(json.RawMessage)); err != nil {
		return nil, jsonErr(err)
	}
	return nil, fmt.Errorf("top level is %s, want an array of jobs", article(kindOf(trimmed)))
}

// wrappedItems picks the job array out of an object wrapper: the first of
// wrapperKeys holding an array; else zero jobs if one of them is null.
// secret is redacted from the error.
func wrappedItems(body []byte, w *wrapper, secret string) ([]json.RawMessage, error) {
	vals := [...]json.RawMessage{w.Jobs, w.Data, w.Items, w.Results, w.Queues}
	for _, v := range vals {
		if kindOf(v) == "array" {
			var items []json.RawMessage
			if err := json.Unmarshal(v, &items); err != nil {
				return nil, jsonErr(err)
			}
			return items, nil
		}
	}
	for _, v := range vals {
		if kindOf(v) == "null" {
			return nil, nil
		}
	}
	for i, v := range vals {
		if k := kindOf(v); k != "" {
			return nil, fmt.Errorf("top-level object key %q holds %s, want an array of jobs", wrapperKeys[i], article(k))
		}
	}
	return nil, fmt.Errorf("top-level object without a jobs array (keys: %s)", objectKeys(body, secret))
}

// objectKeys lists (up to 8 of) the keys of a JSON object, quoted and with
// secret redacted, for an error.
func objectKeys(obj []byte, secret string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil || len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, strconv.Quote(clip(redact(k, secret), 64)))
	}
	slices.Sort(keys)
	if len(keys) > 8 {
		keys = append(keys[:8], "…")
	}
	return strings.Join(keys, ", ")
}

// decodeItem turns one array element into a Job. On error the returned Job
// carries the QueueID if it could be read, for the ItemError.
func decodeItem(raw json.RawMessage) (Job, error) {
	if k := kindOf(raw); k != "object" {
		return Job{}, fmt.Errorf("item is %s, want an object", article(k))
	}
	var w wireJob
	err := json.Unmarshal(raw, &w)
	j := Job{QueueID: w.QueueID}
	if strings.TrimSpace(j.QueueID) == "" {
		j.QueueID = legacyID(w.ID)
	}
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			kind, _, _ := strings.Cut(te.Value, " ") // "number -5" → "number"
			return j, fmt.Errorf("field %q: got %s, want a string", te.Field, article(kind))
		}
		return j, err
	}
	if j.QueueID == "" {
		return j, errMissingQueueID
	}

	j.UniqueID = w.UniqueID
	j.MessageID = w.MessageID
	j.ChatID = w.ChatID
	if j.ChatID == "" {
		j.ChatID = legacyChatID(w.Data)
	}
	j.BroadcastID = w.BroadcastID
	j.PerformedBy = w.PerformedBy
	j.Status = strings.ToLower(strings.TrimSpace(w.Status))
	j.StatusDescription = w.StatusDescription

	field, attempts := "attempts", w.Attempts
	if kindOf(attempts) == "" || kindOf(attempts) == "null" {
		field, attempts = "attemptsMade", w.AttemptsMade
	}
	n, ok, err := number(attempts)
	if err != nil {
		return j, fmt.Errorf("field %q: %w", field, err)
	}
	if ok {
		if n != math.Trunc(n) || n < 0 || n > math.MaxInt32 {
			return j, fmt.Errorf("field %q: %v is not a count", field, n)
		}
		j.Attempts = int(n)
	}

	n, ok, err = number(w.Ack)
	if err != nil {
		return j, fmt.Errorf(`field "ack": %w`, err)
	}
	if ok && n == math.Trunc(n) && n >= -1 && n <= 5 {
		ack := int(n)
		j.Ack = &ack
	}

	if j.Timeline, err = timeline(w.Timeline); err != nil {
		return j, fmt.Errorf(`field "timeline": %w`, err)
	}
	j.Raw = raw
	return j, nil
}

// legacyID reads the legacy "id" (a string, or a number for numeric BullMQ
// ids) as a queue id.
func legacyID(raw json.RawMessage) string {
	switch kindOf(raw) {
	case "string":
		var s string
		if json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
			return s
		}
	case "number":
		return string(raw)
	}
	return ""
}

// legacyChatID reads data.chat_id of the legacy shape, or "".
func legacyChatID(data json.RawMessage) string {
	if kindOf(data) != "object" {
		return ""
	}
	var d struct {
		ChatID string `json:"chat_id"`
	}
	if json.Unmarshal(data, &d) != nil {
		return ""
	}
	return d.ChatID
}

// number reads a JSON number, a numeric string ("2") or null. ok is false
// for null, a missing value or an empty string.
func number(raw json.RawMessage) (n float64, ok bool, err error) {
	text := string(raw)
	switch k := kindOf(raw); k {
	case "", "null":
		return 0, false, nil
	case "number":
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, err
		}
		if text = strings.TrimSpace(s); text == "" {
			return 0, false, nil
		}
	default:
		return 0, false, fmt.Errorf("got %s, want a number", article(k))
	}
	n, err = strconv.ParseFloat(text, 64)
	// Out of float64 range is still a number (±Inf or 0): range checks by
	// the callers deal with it.
	if (err != nil && !errors.Is(err, strconv.ErrRange)) || math.IsNaN(n) {
		return 0, false, fmt.Errorf("%q is not a number", clip(text, 32))
	}
	return n, true, nil
}

// timeline decodes the timeline object. Values that are not a timestamp
// (or null) are dropped; null, a missing timeline or one with no usable
// value gives a nil map.
func timeline(raw json.RawMessage) (map[string]time.Time, error) {
	switch k := kindOf(raw); k {
	case "", "null":
		return nil, nil
	case "object":
	default:
		return nil, fmt.Errorf("got %s, want an object", article(k))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	var out map[string]time.Time
	for k, v := range m {
		t, ok := timestamp(v)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]time.Time, len(m))
		}
		out[k] = t
	}
	return out, nil
}

// timeLayouts are tried in order on timeline strings. Fractional seconds
// are accepted by all of them. Layouts without a zone are read as UTC.
var timeLayouts = [...]string{
	time.RFC3339,
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
}

// maxEpochMillis is 9999-12-31T23:59:59.999Z.
const maxEpochMillis = 253402300799999

// timestamp reads one timeline value: an RFC 3339-like string, or epoch
// milliseconds as a number or digit string. Epoch 0 and negative values
// are taken as "unset". The result is in UTC.
func timestamp(raw json.RawMessage) (time.Time, bool) {
	var text string
	switch kindOf(raw) {
	case "string":
		if json.Unmarshal(raw, &text) != nil {
			return time.Time{}, false
		}
		text = strings.TrimSpace(text)
		for _, layout := range timeLayouts {
			if t, err := time.Parse(layout, text); err == nil {
				t = t.UTC()
				// An offset can push 9999-12-31 into year 10000, which no
				// RFC 3339 timestamp (nor an event) can hold.
				return t, t.Year() <= 9999
			}
		}
	case "number":
		text = string(raw)
	default:
		return time.Time{}, false
	}
	ms, err := strconv.ParseFloat(text, 64)
	if err != nil || !(ms > 0 && ms <= maxEpochMillis) { // also rejects NaN
		return time.Time{}, false
	}
	whole := math.Trunc(ms)
	return time.UnixMilli(int64(whole)).Add(time.Duration((ms - whole) * 1e6)).UTC(), true
}

// kindOf names the kind of a JSON value by its first byte: "object",
// "array", "string", "number", "boolean", "null", or "" for nothing.
func kindOf(raw []byte) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return ""
	}
	switch c := raw[0]; {
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == '"':
		return "string"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "number"
	}
	return "invalid JSON"
}

// article prefixes a kind with "a"/"an" ("an object"), leaving "null" bare.
func article(kind string) string {
	switch {
	case kind == "null" || kind == "":
		return "null"
	case strings.ContainsRune("aeiou", rune(kind[0])):
		return "an " + kind
	}
	return "a " + kind
}

// clip cuts s to at most n bytes, marking the cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// jsonErr describes a JSON syntax problem.
func jsonErr(err error) error {
	return fmt.Errorf("invalid JSON: %w", err)
}

// mediaType returns the media type of a Content-Type header value without
// its parameters ("text/html"), or the sanitized raw value if it does not
// parse.
func mediaType(contentType string) string {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		return mt
	}
	return sanitize([]byte(contentType), 100, "")
}
