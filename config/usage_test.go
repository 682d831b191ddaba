package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// contract is the public list of variable names, in order. Renaming one
// breaks deployments, so it is spelled out here rather than derived.
var contract = []string{
	"QUEUEWATCH_API_KEY", "QUEUEWATCH_API_KEY_FILE", "QUEUEWATCH_API_URL",
	"QUEUEWATCH_PHONES", "QUEUEWATCH_BROADCASTS",
	"QUEUEWATCH_POLL_INTERVAL", "QUEUEWATCH_REQUEST_TIMEOUT", "QUEUEWATCH_RATE_LIMIT", "QUEUEWATCH_SHUTDOWN_GRACE",
	"QUEUEWATCH_NATS_URL", "QUEUEWATCH_NATS_CREDS", "QUEUEWATCH_NATS_USER", "QUEUEWATCH_NATS_PASSWORD", "QUEUEWATCH_NATS_TOKEN",
	"QUEUEWATCH_NATS_TLS_CERT", "QUEUEWATCH_NATS_TLS_KEY", "QUEUEWATCH_NATS_TLS_CA",
	"QUEUEWATCH_DATA_DIR", "QUEUEWATCH_NATS_LISTEN",
	"QUEUEWATCH_SUBJECT", "QUEUEWATCH_SUBJECT_DETAIL", "QUEUEWATCH_STREAM", "QUEUEWATCH_KV_BUCKET", "QUEUEWATCH_REPLICAS",
	"QUEUEWATCH_DUPLICATE_WINDOW", "QUEUEWATCH_SNAPSHOT_TTL", "QUEUEWATCH_STREAM_MAX_AGE", "QUEUEWATCH_EMIT_BASELINE",
	"QUEUEWATCH_HTTP_ADDR", "QUEUEWATCH_LOG_LEVEL", "QUEUEWATCH_LOG_FORMAT",
}

func TestVarsMatchStruct(t *testing.T) {
	vars := Vars()
	var names []string
	for _, v := range vars {
		names = append(names, v.Name)
	}
	if diff := cmp.Diff(contract, names); diff != "" {
		t.Errorf("variable names changed (-contract +Vars):\n%s", diff)
	}

	typ := reflect.TypeFor[Config]()
	if typ.NumField() != len(vars) {
		t.Fatalf("Config has %d fields, Vars %d", typ.NumField(), len(vars))
	}
	for i, v := range vars {
		f := typ.Field(i)
		if got := f.Tag.Get("envconfig"); got != v.Name {
			t.Errorf("field %s: envconfig tag %q, Vars name %q", f.Name, got, v.Name)
		}
		if v.Default != f.Tag.Get("default") || v.Description != f.Tag.Get("desc") {
			t.Errorf("field %s: Vars entry %+v does not match its tags", f.Name, v)
		}
		if v.Description == "" {
			t.Errorf("%s has no description", v.Name)
		}
		if f.Tag.Get("split_words") != "" || f.Tag.Get("required") != "" || f.Tag.Get("ignored") != "" {
			t.Errorf("field %s: unexpected envconfig tag", f.Name)
		}
	}
}

func TestUsage(t *testing.T) {
	var buf bytes.Buffer
	if err := Usage(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if got := strings.Fields(lines[0]); len(got) < 3 || got[0] != "VARIABLE" {
		t.Errorf("header = %q", lines[0])
	}
	rows := make(map[string]int)
	defaults := make(map[string]string)
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) < 3 {
			t.Fatalf("short row %q", line)
		}
		rows[fields[0]]++
		defaults[fields[0]] = fields[1]
	}
	if len(lines)-1 != len(Vars()) {
		t.Errorf("Usage has %d rows, want %d", len(lines)-1, len(Vars()))
	}
	for _, v := range Vars() {
		if rows[v.Name] != 1 {
			t.Errorf("%s listed %d times, want once", v.Name, rows[v.Name])
		}
		want := v.Default
		if want == "" {
			want = "-"
		}
		if defaults[v.Name] != want {
			t.Errorf("%s default column = %q, want %q", v.Name, defaults[v.Name], want)
		}
		if !strings.Contains(buf.String(), v.Description) {
			t.Errorf("%s description missing", v.Name)
		}
	}
	// Columns are aligned: every row's description starts at the same offset.
	col := strings.Index(lines[0], "DESCRIPTION")
	for _, line := range lines[1:] {
		if line[col-1] != ' ' || line[col] == ' ' {
			t.Errorf("misaligned row %q", line)
		}
	}
}
