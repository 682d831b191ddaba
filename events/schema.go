package events

import (
	"bytes"
	_ "embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schema is the JSON Schema (draft 2020-12) of an event payload, the file
// events/schema/queue.job.status_changed.schema.json. It lists every member
// that is always present as required; members it does not list may be added
// later, so it does not forbid them. Do not modify the slice.
//
//go:embed schema/queue.job.status_changed.schema.json
var Schema []byte

// SchemaID is the $id of Schema.
const SchemaID = "https://github.com/queuewatch/queuewatch/events/schema/queue.job.status_changed.schema.json"

// compiledSchema compiles Schema once, asserting "format" (date-time).
var compiledSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		return nil, fmt.Errorf("events: parse embedded schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(SchemaID, doc); err != nil {
		return nil, fmt.Errorf("events: load embedded schema: %w", err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		return nil, fmt.Errorf("events: compile embedded schema: %w", err)
	}
	return s, nil
})

// ValidatePayload checks a message payload against Schema. The error wraps
// ErrInvalid and, when the payload is JSON that breaks the schema, a
// *jsonschema.ValidationError naming each violation by its JSON pointer.
//
// Decode checks what a consumer needs to rely on; ValidatePayload checks the
// whole published contract, e.g. in a producer's tests.
func ValidatePayload(payload []byte) error {
	s, err := compiledSchema()
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("%w: not JSON: %w", ErrInvalid, err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}
