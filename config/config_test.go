package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kelseyhightower/envconfig"

	"github.com/queuewatch/queuewatch/periskope"
)

// clearEnv unsets every queuewatch variable and its unprefixed form for the
// duration of the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, v := range Vars() {
		for _, name := range []string{v.Name, strings.TrimPrefix(v.Name, "QUEUEWATCH_")} {
			t.Setenv(name, "") // restores the old value after the test
			os.Unsetenv(name)
		}
	}
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	clearEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	got, err := Parse()
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		APIURL:          "https://api.periskope.app/v1",
		PollInterval:    5 * time.Second,
		RequestTimeout:  10 * time.Second,
		RateLimit:       10,
		ShutdownGrace:   20 * time.Second,
		DataDir:         "queuewatch-data",
		NATSListen:      "127.0.0.1:4222",
		Subject:         "queue.job.status_changed",
		Stream:          "QUEUE_JOB_EVENTS",
		KVBucket:        "queuewatch_snapshots",
		Replicas:        1,
		DuplicateWindow: 15 * time.Minute,
		SnapshotTTL:     168 * time.Hour,
		StreamMaxAge:    168 * time.Hour,
		HTTPAddr:        ":8080",
		LogLevel:        "info",
		LogFormat:       "json",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
	if !got.EmbeddedNATS() {
		t.Error("EmbeddedNATS() = false with QUEUEWATCH_NATS_URL unset")
	}
}

func TestParseAllSet(t *testing.T) {
	creds, cert, key, ca := writeFile(t, "c"), writeFile(t, "c"), writeFile(t, "k"), writeFile(t, "a")
	setEnv(t, map[string]string{
		"QUEUEWATCH_API_KEY":          "key",
		"QUEUEWATCH_API_URL":          "http://localhost:9000/v1",
		"QUEUEWATCH_PHONES":           "918527184400",
		"QUEUEWATCH_BROADCASTS":       "918527184400:bc-1",
		"QUEUEWATCH_POLL_INTERVAL":    "1m30s",
		"QUEUEWATCH_REQUEST_TIMEOUT":  "3s",
		"QUEUEWATCH_RATE_LIMIT":       "0",
		"QUEUEWATCH_SHUTDOWN_GRACE":   "4s",
		"QUEUEWATCH_NATS_URL":         "nats://a:4222, tls://b:4222,ws://c,wss://d",
		"QUEUEWATCH_NATS_CREDS":       creds,
		"QUEUEWATCH_NATS_USER":        "u",
		"QUEUEWATCH_NATS_PASSWORD":    "p",
		"QUEUEWATCH_NATS_TOKEN":       "t",
		"QUEUEWATCH_NATS_TLS_CERT":    cert,
		"QUEUEWATCH_NATS_TLS_KEY":     key,
		"QUEUEWATCH_NATS_TLS_CA":      ca,
		"QUEUEWATCH_DATA_DIR":         "/data",
		"QUEUEWATCH_NATS_LISTEN":      ":0",
		"QUEUEWATCH_SUBJECT":          "a.b-c.d_e",
		"QUEUEWATCH_SUBJECT_DETAIL":   "true",
		"QUEUEWATCH_STREAM":           "S",
		"QUEUEWATCH_KV_BUCKET":        "b",
		"QUEUEWATCH_REPLICAS":         "5",
		"QUEUEWATCH_DUPLICATE_WINDOW": "1m",
		"QUEUEWATCH_SNAPSHOT_TTL":     "2m",
		"QUEUEWATCH_STREAM_MAX_AGE":   "0",
		"QUEUEWATCH_EMIT_BASELINE":    "true",
		"QUEUEWATCH_HTTP_ADDR":        "127.0.0.1:0",
		"QUEUEWATCH_LOG_LEVEL":        "debug",
		"QUEUEWATCH_LOG_FORMAT":       "console",
	})
	got, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		APIKey: "key", APIURL: "http://localhost:9000/v1",
		Phones: []string{"918527184400"}, Broadcasts: []string{"918527184400:bc-1"},
		PollInterval: 90 * time.Second, RequestTimeout: 3 * time.Second, RateLimit: 0, ShutdownGrace: 4 * time.Second,
		NATSURL: "nats://a:4222, tls://b:4222,ws://c,wss://d", NATSCreds: creds,
		NATSUser: "u", NATSPassword: "p", NATSToken: "t",
		NATSTLSCert: cert, NATSTLSKey: key, NATSTLSCA: ca,
		DataDir: "/data", NATSListen: ":0",
		Subject: "a.b-c.d_e", Stream: "S", KVBucket: "b", Replicas: 5,
		DuplicateWindow: time.Minute, SnapshotTTL: 2 * time.Minute, StreamMaxAge: 0,
		EmitBaseline: true, SubjectDetail: true, HTTPAddr: "127.0.0.1:0", LogLevel: "debug", LogFormat: "console",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
	if got.EmbeddedNATS() {
		t.Error("EmbeddedNATS() = true with QUEUEWATCH_NATS_URL set")
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	file := writeFile(t, "x")
	empty := writeFile(t, " \n\t")
	phones := map[string]string{"QUEUEWATCH_PHONES": "918527184400"}

	tests := []struct {
		name string
		env  map[string]string
		load bool // call Load instead of Parse
		want string
	}{
		// API key
		{"key and file", map[string]string{"QUEUEWATCH_API_KEY": "k", "QUEUEWATCH_API_KEY_FILE": file}, false,
			"QUEUEWATCH_API_KEY_FILE: set together with QUEUEWATCH_API_KEY: expected only one of QUEUEWATCH_API_KEY and QUEUEWATCH_API_KEY_FILE"},
		{"key missing", phones, true,
			"QUEUEWATCH_API_KEY: not set: expected the Periskope API key in QUEUEWATCH_API_KEY or a file named by QUEUEWATCH_API_KEY_FILE"},
		{"key empty", map[string]string{"QUEUEWATCH_API_KEY": "", "QUEUEWATCH_PHONES": "1"}, true,
			"QUEUEWATCH_API_KEY: not set: expected the Periskope API key in QUEUEWATCH_API_KEY or a file named by QUEUEWATCH_API_KEY_FILE"},
		{"key blank", map[string]string{"QUEUEWATCH_API_KEY": " \t", "QUEUEWATCH_PHONES": "1"}, true,
			"QUEUEWATCH_API_KEY: not set: expected the Periskope API key in QUEUEWATCH_API_KEY or a file named by QUEUEWATCH_API_KEY_FILE"},
		{"key file missing", map[string]string{"QUEUEWATCH_API_KEY_FILE": missing, "QUEUEWATCH_PHONES": "1"}, true,
			`QUEUEWATCH_API_KEY_FILE: cannot read "` + missing + `": no such file or directory: expected a readable file holding the Periskope API key`},
		{"key file empty", map[string]string{"QUEUEWATCH_API_KEY_FILE": empty, "QUEUEWATCH_PHONES": "1"}, true,
			`QUEUEWATCH_API_KEY_FILE: file "` + empty + `" is empty: expected a readable file holding the Periskope API key`},
		{"key file directory", map[string]string{"QUEUEWATCH_API_KEY_FILE": dir, "QUEUEWATCH_PHONES": "1"}, true,
			`QUEUEWATCH_API_KEY_FILE: cannot read "` + dir + `": is a directory: expected a readable file holding the Periskope API key`},
		{"no targets", map[string]string{"QUEUEWATCH_API_KEY": "k"}, true,
			"QUEUEWATCH_PHONES: no targets (QUEUEWATCH_PHONES and QUEUEWATCH_BROADCASTS are both empty): expected at least one phone in QUEUEWATCH_PHONES or phone:broadcast_id pair in QUEUEWATCH_BROADCASTS"},
		{"no targets blank", map[string]string{"QUEUEWATCH_API_KEY": "k", "QUEUEWATCH_PHONES": " ", "QUEUEWATCH_BROADCASTS": ""}, true,
			"QUEUEWATCH_PHONES: no targets (QUEUEWATCH_PHONES and QUEUEWATCH_BROADCASTS are both empty): expected at least one phone in QUEUEWATCH_PHONES or phone:broadcast_id pair in QUEUEWATCH_BROADCASTS"},

		// API URL
		{"url scheme", map[string]string{"QUEUEWATCH_API_URL": "ftp://api.periskope.app"}, false,
			`QUEUEWATCH_API_URL: invalid value "ftp://api.periskope.app": expected an absolute http or https URL such as https://api.periskope.app/v1`},
		{"url relative", map[string]string{"QUEUEWATCH_API_URL": "api.periskope.app/v1"}, false,
			`QUEUEWATCH_API_URL: invalid value "api.periskope.app/v1": expected an absolute http or https URL such as https://api.periskope.app/v1`},
		{"url no host", map[string]string{"QUEUEWATCH_API_URL": "https:///v1"}, false,
			`QUEUEWATCH_API_URL: invalid value "https:///v1": expected an absolute http or https URL such as https://api.periskope.app/v1`},
		{"url empty", map[string]string{"QUEUEWATCH_API_URL": ""}, false,
			`QUEUEWATCH_API_URL: invalid value "": expected an absolute http or https URL such as https://api.periskope.app/v1`},
		{"url unparsable", map[string]string{"QUEUEWATCH_API_URL": "://x"}, false,
			`QUEUEWATCH_API_URL: not a valid URL: expected an absolute http or https URL such as https://api.periskope.app/v1`},

		// Targets
		{"phone trailing comma", map[string]string{"QUEUEWATCH_PHONES": "918527184400,"}, false,
			`QUEUEWATCH_PHONES: entry 2 is empty: expected comma-separated phone numbers with country code or phone ids (letters, digits, _ and -)`},
		{"phone blank entry", map[string]string{"QUEUEWATCH_PHONES": "1, ,2"}, false,
			`QUEUEWATCH_PHONES: entry 2 is empty: expected comma-separated phone numbers with country code or phone ids (letters, digits, _ and -)`},
		{"phone bad chars", map[string]string{"QUEUEWATCH_PHONES": "1,91-852/718"}, false,
			`QUEUEWATCH_PHONES: invalid entry 2 "91-852/718": expected comma-separated phone numbers with country code or phone ids (letters, digits, _ and -)`},
		{"phone only plus", map[string]string{"QUEUEWATCH_PHONES": "+"}, false,
			`QUEUEWATCH_PHONES: invalid entry 1 "+": expected comma-separated phone numbers with country code or phone ids (letters, digits, _ and -)`},
		{"broadcast no colon", map[string]string{"QUEUEWATCH_BROADCASTS": "918527184400"}, false,
			`QUEUEWATCH_BROADCASTS: invalid entry 1 "918527184400": expected comma-separated phone:broadcast_id pairs (letters, digits, _ and -)`},
		{"broadcast no id", map[string]string{"QUEUEWATCH_BROADCASTS": "1:a,918527184400:"}, false,
			`QUEUEWATCH_BROADCASTS: invalid entry 2 "918527184400:": expected comma-separated phone:broadcast_id pairs (letters, digits, _ and -)`},
		{"broadcast no phone", map[string]string{"QUEUEWATCH_BROADCASTS": ":bc"}, false,
			`QUEUEWATCH_BROADCASTS: invalid entry 1 ":bc": expected comma-separated phone:broadcast_id pairs (letters, digits, _ and -)`},
		{"broadcast bad id", map[string]string{"QUEUEWATCH_BROADCASTS": "1:bc:2"}, false,
			`QUEUEWATCH_BROADCASTS: invalid entry 1 "1:bc:2": expected comma-separated phone:broadcast_id pairs (letters, digits, _ and -)`},
		{"broadcast empty entry", map[string]string{"QUEUEWATCH_BROADCASTS": "1:a,,"}, false,
			`QUEUEWATCH_BROADCASTS: entry 2 is empty: expected comma-separated phone:broadcast_id pairs (letters, digits, _ and -)`},

		// Polling
		{"poll interval text", map[string]string{"QUEUEWATCH_POLL_INTERVAL": "abc"}, false,
			`QUEUEWATCH_POLL_INTERVAL: invalid value "abc": expected a positive duration such as 5s or 1m30s`},
		{"poll interval zero", map[string]string{"QUEUEWATCH_POLL_INTERVAL": "0"}, false,
			`QUEUEWATCH_POLL_INTERVAL: invalid value "0s": expected a positive duration such as 5s or 1m30s`},
		{"poll interval empty", map[string]string{"QUEUEWATCH_POLL_INTERVAL": ""}, false,
			`QUEUEWATCH_POLL_INTERVAL: invalid value "": expected a positive duration such as 5s or 1m30s`},
		{"request timeout no unit", map[string]string{"QUEUEWATCH_REQUEST_TIMEOUT": "5"}, false,
			`QUEUEWATCH_REQUEST_TIMEOUT: invalid value "5": expected a positive duration such as 5s or 1m30s`},
		{"request timeout negative", map[string]string{"QUEUEWATCH_REQUEST_TIMEOUT": "-1s"}, false,
			`QUEUEWATCH_REQUEST_TIMEOUT: invalid value "-1s": expected a positive duration such as 5s or 1m30s`},
		{"rate limit text", map[string]string{"QUEUEWATCH_RATE_LIMIT": "fast"}, false,
			`QUEUEWATCH_RATE_LIMIT: invalid value "fast": expected a number of requests per second, 0 or more (0 = unlimited)`},
		{"rate limit negative", map[string]string{"QUEUEWATCH_RATE_LIMIT": "-0.5"}, false,
			`QUEUEWATCH_RATE_LIMIT: invalid value "-0.5": expected a number of requests per second, 0 or more (0 = unlimited)`},
		{"rate limit NaN", map[string]string{"QUEUEWATCH_RATE_LIMIT": "NaN"}, false,
			`QUEUEWATCH_RATE_LIMIT: invalid value "NaN": expected a number of requests per second, 0 or more (0 = unlimited)`},
		{"rate limit Inf", map[string]string{"QUEUEWATCH_RATE_LIMIT": "Inf"}, false,
			`QUEUEWATCH_RATE_LIMIT: invalid value "+Inf": expected a number of requests per second, 0 or more (0 = unlimited)`},
		{"shutdown grace zero", map[string]string{"QUEUEWATCH_SHUTDOWN_GRACE": "0s"}, false,
			`QUEUEWATCH_SHUTDOWN_GRACE: invalid value "0s": expected a positive duration such as 5s or 1m30s`},

		// NATS
		{"nats url scheme", map[string]string{"QUEUEWATCH_NATS_URL": "nats://a:4222,http://b:80"}, false,
			`QUEUEWATCH_NATS_URL: entry 2: invalid value "http://b:80": expected comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server`},
		{"nats url no host", map[string]string{"QUEUEWATCH_NATS_URL": "nats://"}, false,
			`QUEUEWATCH_NATS_URL: entry 1: invalid value "nats://": expected comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server`},
		{"nats url bare host", map[string]string{"QUEUEWATCH_NATS_URL": "localhost:4222"}, false,
			`QUEUEWATCH_NATS_URL: entry 1: invalid value "localhost:4222": expected comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server`},
		{"nats url empty entry", map[string]string{"QUEUEWATCH_NATS_URL": "nats://a,"}, false,
			`QUEUEWATCH_NATS_URL: entry 2 is empty: expected comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server`},
		{"nats url blank", map[string]string{"QUEUEWATCH_NATS_URL": " "}, false,
			`QUEUEWATCH_NATS_URL: entry 1 is empty: expected comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server`},
		{"nats url password redacted", map[string]string{"QUEUEWATCH_NATS_URL": "https://u:pw-SECRET@b"}, false,
			`QUEUEWATCH_NATS_URL: entry 1: invalid value "https://redacted@b": expected comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server`},
		{"nats creds missing", map[string]string{"QUEUEWATCH_NATS_CREDS": missing}, false,
			`QUEUEWATCH_NATS_CREDS: cannot read "` + missing + `": no such file or directory: expected an existing file`},
		{"nats creds directory", map[string]string{"QUEUEWATCH_NATS_CREDS": dir}, false,
			`QUEUEWATCH_NATS_CREDS: "` + dir + `" is a directory: expected an existing file`},
		{"nats user without password", map[string]string{"QUEUEWATCH_NATS_USER": "u"}, false,
			`QUEUEWATCH_NATS_USER: set without QUEUEWATCH_NATS_PASSWORD: expected QUEUEWATCH_NATS_PASSWORD to be set too`},
		{"nats password without user", map[string]string{"QUEUEWATCH_NATS_PASSWORD": "p"}, false,
			`QUEUEWATCH_NATS_PASSWORD: set without QUEUEWATCH_NATS_USER: expected QUEUEWATCH_NATS_USER to be set too`},
		{"tls cert without key", map[string]string{"QUEUEWATCH_NATS_TLS_CERT": file}, false,
			`QUEUEWATCH_NATS_TLS_CERT: set without QUEUEWATCH_NATS_TLS_KEY: expected an existing file, set together with QUEUEWATCH_NATS_TLS_KEY`},
		{"tls key without cert", map[string]string{"QUEUEWATCH_NATS_TLS_KEY": file}, false,
			`QUEUEWATCH_NATS_TLS_KEY: set without QUEUEWATCH_NATS_TLS_CERT: expected an existing file, set together with QUEUEWATCH_NATS_TLS_CERT`},
		{"tls cert missing", map[string]string{"QUEUEWATCH_NATS_TLS_CERT": missing, "QUEUEWATCH_NATS_TLS_KEY": file}, false,
			`QUEUEWATCH_NATS_TLS_CERT: cannot read "` + missing + `": no such file or directory: expected an existing file, set together with QUEUEWATCH_NATS_TLS_KEY`},
		{"tls key missing", map[string]string{"QUEUEWATCH_NATS_TLS_CERT": file, "QUEUEWATCH_NATS_TLS_KEY": missing}, false,
			`QUEUEWATCH_NATS_TLS_KEY: cannot read "` + missing + `": no such file or directory: expected an existing file, set together with QUEUEWATCH_NATS_TLS_CERT`},
		{"tls ca missing", map[string]string{"QUEUEWATCH_NATS_TLS_CA": missing}, false,
			`QUEUEWATCH_NATS_TLS_CA: cannot read "` + missing + `": no such file or directory: expected an existing file`},
		{"data dir empty", map[string]string{"QUEUEWATCH_DATA_DIR": ""}, false,
			`QUEUEWATCH_DATA_DIR: empty: expected a directory path`},
		{"listen no port", map[string]string{"QUEUEWATCH_NATS_LISTEN": "127.0.0.1"}, false,
			`QUEUEWATCH_NATS_LISTEN: invalid value "127.0.0.1": expected host:port such as 127.0.0.1:4222 (port 0 = random)`},
		{"listen port range", map[string]string{"QUEUEWATCH_NATS_LISTEN": "127.0.0.1:65536"}, false,
			`QUEUEWATCH_NATS_LISTEN: invalid value "127.0.0.1:65536": expected host:port such as 127.0.0.1:4222 (port 0 = random)`},
		{"listen port name", map[string]string{"QUEUEWATCH_NATS_LISTEN": "localhost:nats"}, false,
			`QUEUEWATCH_NATS_LISTEN: invalid value "localhost:nats": expected host:port such as 127.0.0.1:4222 (port 0 = random)`},

		// JetStream
		{"subject wildcard", map[string]string{"QUEUEWATCH_SUBJECT": "queue.*.changed"}, false,
			`QUEUEWATCH_SUBJECT: invalid value "queue.*.changed": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"subject full wildcard", map[string]string{"QUEUEWATCH_SUBJECT": "queue.>"}, false,
			`QUEUEWATCH_SUBJECT: invalid value "queue.>": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"subject empty token", map[string]string{"QUEUEWATCH_SUBJECT": "queue..changed"}, false,
			`QUEUEWATCH_SUBJECT: invalid value "queue..changed": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"subject trailing dot", map[string]string{"QUEUEWATCH_SUBJECT": "queue."}, false,
			`QUEUEWATCH_SUBJECT: invalid value "queue.": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"subject space", map[string]string{"QUEUEWATCH_SUBJECT": "queue job"}, false,
			`QUEUEWATCH_SUBJECT: invalid value "queue job": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"subject control", map[string]string{"QUEUEWATCH_SUBJECT": "queue\tjob"}, false,
			`QUEUEWATCH_SUBJECT: invalid value "queue\tjob": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"subject empty", map[string]string{"QUEUEWATCH_SUBJECT": ""}, false,
			`QUEUEWATCH_SUBJECT: invalid value "": expected a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)`},
		{"stream dot", map[string]string{"QUEUEWATCH_STREAM": "queue.events"}, false,
			`QUEUEWATCH_STREAM: invalid value "queue.events": expected a name of letters, digits, _ and -`},
		{"stream empty", map[string]string{"QUEUEWATCH_STREAM": ""}, false,
			`QUEUEWATCH_STREAM: invalid value "": expected a name of letters, digits, _ and -`},
		{"bucket space", map[string]string{"QUEUEWATCH_KV_BUCKET": "my bucket"}, false,
			`QUEUEWATCH_KV_BUCKET: invalid value "my bucket": expected a name of letters, digits, _ and -`},
		{"replicas text", map[string]string{"QUEUEWATCH_REPLICAS": "three"}, false,
			`QUEUEWATCH_REPLICAS: invalid value "three": expected an integer from 1 to 5`},
		{"replicas zero", map[string]string{"QUEUEWATCH_REPLICAS": "0"}, false,
			`QUEUEWATCH_REPLICAS: invalid value "0": expected an integer from 1 to 5`},
		{"replicas six", map[string]string{"QUEUEWATCH_REPLICAS": "6"}, false,
			`QUEUEWATCH_REPLICAS: invalid value "6": expected an integer from 1 to 5`},
		{"duplicate window zero", map[string]string{"QUEUEWATCH_DUPLICATE_WINDOW": "0s"}, false,
			`QUEUEWATCH_DUPLICATE_WINDOW: invalid value "0s": expected a positive duration such as 5s or 1m30s`},
		{"duplicate window text", map[string]string{"QUEUEWATCH_DUPLICATE_WINDOW": "15 minutes"}, false,
			`QUEUEWATCH_DUPLICATE_WINDOW: invalid value "15 minutes": expected a positive duration such as 5s or 1m30s`},
		{"snapshot ttl zero", map[string]string{"QUEUEWATCH_SNAPSHOT_TTL": "0"}, false,
			`QUEUEWATCH_SNAPSHOT_TTL: invalid value "0s": expected a positive duration such as 5s or 1m30s`},
		{"snapshot ttl below window", map[string]string{"QUEUEWATCH_SNAPSHOT_TTL": "10m"}, false,
			`QUEUEWATCH_SNAPSHOT_TTL: 10m0s is not greater than QUEUEWATCH_DUPLICATE_WINDOW (15m0s): expected a duration greater than QUEUEWATCH_DUPLICATE_WINDOW, otherwise a job seen again after its snapshot expired could publish its event again once the stream's duplicate detection has forgotten it`},
		{"snapshot ttl equals window", map[string]string{"QUEUEWATCH_SNAPSHOT_TTL": "1h", "QUEUEWATCH_DUPLICATE_WINDOW": "60m"}, false,
			`QUEUEWATCH_SNAPSHOT_TTL: 1h0m0s is not greater than QUEUEWATCH_DUPLICATE_WINDOW (1h0m0s): expected a duration greater than QUEUEWATCH_DUPLICATE_WINDOW, otherwise a job seen again after its snapshot expired could publish its event again once the stream's duplicate detection has forgotten it`},
		{"stream max age negative", map[string]string{"QUEUEWATCH_STREAM_MAX_AGE": "-1h"}, false,
			`QUEUEWATCH_STREAM_MAX_AGE: invalid value "-1h0m0s": expected a duration such as 168h, or 0 to keep events forever`},
		{"stream max age text", map[string]string{"QUEUEWATCH_STREAM_MAX_AGE": "forever"}, false,
			`QUEUEWATCH_STREAM_MAX_AGE: invalid value "forever": expected a duration such as 168h, or 0 to keep events forever`},
		{"emit baseline", map[string]string{"QUEUEWATCH_EMIT_BASELINE": "yes"}, false,
			`QUEUEWATCH_EMIT_BASELINE: invalid value "yes": expected true or false`},
		{"grace shorter than a request", map[string]string{"QUEUEWATCH_SHUTDOWN_GRACE": "5s", "QUEUEWATCH_REQUEST_TIMEOUT": "10s"}, false,
			`QUEUEWATCH_SHUTDOWN_GRACE: 5s is shorter than QUEUEWATCH_REQUEST_TIMEOUT (10s): expected a duration of at least QUEUEWATCH_REQUEST_TIMEOUT, which bounds the publish and commit that shutdown lets finish`},
		{"subject detail", map[string]string{"QUEUEWATCH_SUBJECT_DETAIL": "on"}, false,
			`QUEUEWATCH_SUBJECT_DETAIL: invalid value "on": expected true or false`},

		// Operations
		{"http addr port only", map[string]string{"QUEUEWATCH_HTTP_ADDR": "8080"}, false,
			`QUEUEWATCH_HTTP_ADDR: invalid value "8080": expected host:port such as :8080 or 127.0.0.1:8080`},
		{"http addr empty", map[string]string{"QUEUEWATCH_HTTP_ADDR": ""}, false,
			`QUEUEWATCH_HTTP_ADDR: invalid value "": expected host:port such as :8080 or 127.0.0.1:8080`},
		{"log level", map[string]string{"QUEUEWATCH_LOG_LEVEL": "verbose"}, false,
			`QUEUEWATCH_LOG_LEVEL: invalid value "verbose": expected debug, info, warn or error`},
		{"log level case", map[string]string{"QUEUEWATCH_LOG_LEVEL": "INFO"}, false,
			`QUEUEWATCH_LOG_LEVEL: invalid value "INFO": expected debug, info, warn or error`},
		{"log format", map[string]string{"QUEUEWATCH_LOG_FORMAT": "text"}, false,
			`QUEUEWATCH_LOG_FORMAT: invalid value "text": expected json or console`},

		// Order: the first problem in declaration order wins.
		{"first problem", map[string]string{"QUEUEWATCH_LOG_FORMAT": "text", "QUEUEWATCH_STREAM": "a.b", "QUEUEWATCH_POLL_INTERVAL": "0s"}, false,
			`QUEUEWATCH_POLL_INTERVAL: invalid value "0s": expected a positive duration such as 5s or 1m30s`},
	}

	covered := make(map[string]bool)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setEnv(t, tt.env)
			load := Parse
			if tt.load {
				load = Load
			}
			c, err := load()
			if err == nil {
				t.Fatalf("got %+v, want error %q", c, tt.want)
			}
			if c != nil {
				t.Errorf("got non-nil config with error")
			}
			if err.Error() != tt.want {
				t.Errorf("error mismatch\n got: %s\nwant: %s", err, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			covered[e.Var] = true
		})
	}

	// Every variable with an invalid form has a case above.
	for _, v := range Vars() {
		if !covered[v.Name] && v.Name != "QUEUEWATCH_NATS_TOKEN" {
			t.Errorf("no error case names %s", v.Name)
		}
	}
}

func TestAPIKeyFile(t *testing.T) {
	path := writeFile(t, "  \n key-from-file\t\n")
	setEnv(t, map[string]string{"QUEUEWATCH_API_KEY_FILE": path, "QUEUEWATCH_PHONES": "1"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.APIKey.Reveal(); got != "key-from-file" {
		t.Errorf("APIKey = %q, want %q", got, "key-from-file")
	}
	if c.APIKeyFile != "" {
		t.Errorf("APIKeyFile = %q after RequireRun, want it cleared", c.APIKeyFile)
	}
	// The resolved config stays valid and RequireRun is idempotent.
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after Load: %v", err)
	}
	if err := c.RequireRun(); err != nil {
		t.Errorf("second RequireRun: %v", err)
	}
}

func TestAPIKeyTrimmed(t *testing.T) {
	setEnv(t, map[string]string{"QUEUEWATCH_API_KEY": " key\n", "QUEUEWATCH_BROADCASTS": "1:b"})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.APIKey.Reveal(); got != "key" {
		t.Errorf("APIKey = %q, want %q", got, "key")
	}
}

func TestParseDoesNotRequireRun(t *testing.T) {
	setEnv(t, map[string]string{"QUEUEWATCH_API_KEY_FILE": "/does/not/exist"})
	if _, err := Parse(); err != nil {
		t.Fatalf("Parse() without key or targets: %v", err)
	}
}

func TestTargets(t *testing.T) {
	setEnv(t, map[string]string{
		"QUEUEWATCH_PHONES":     " +91 852 718 4400 ,phone-abc_1,918527184400,+918527184400",
		"QUEUEWATCH_BROADCASTS": "+918527184400:bc-1, 918527184400 : bc-1 ,phone-abc_1:bc2,918527184400:bc-1,918527184400:BC-1",
	})
	c, err := Parse()
	if err != nil {
		t.Fatal(err)
	}
	want := []periskope.Target{
		{Phone: "918527184400"},
		{Phone: "phone-abc_1"},
		{Phone: "918527184400", BroadcastID: "bc-1"},
		{Phone: "phone-abc_1", BroadcastID: "bc2"},
		{Phone: "918527184400", BroadcastID: "BC-1"},
	}
	if diff := cmp.Diff(want, c.Targets()); diff != "" {
		t.Errorf("Targets() mismatch (-want +got):\n%s", diff)
	}
}

func TestTargetsEmpty(t *testing.T) {
	if got := (&Config{}).Targets(); len(got) != 0 {
		t.Errorf("Targets() = %v, want none", got)
	}
}

// TestEnvconfigPrefixFallback pins the envconfig behaviour that Config's
// design avoids: with a prefix, an explicit tag is also looked up unprefixed.
func TestEnvconfigPrefixFallback(t *testing.T) {
	clearEnv(t)
	t.Setenv("PHONES", "123")
	var s struct {
		Phones []string `envconfig:"PHONES"`
	}
	if err := envconfig.Process("QUEUEWATCH", &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Phones) != 1 {
		t.Fatalf("envconfig no longer falls back to unprefixed names (got %v); the full-name tags could be simplified", s.Phones)
	}
}

func TestUnprefixedIgnored(t *testing.T) {
	clearEnv(t)
	for _, v := range Vars() {
		t.Setenv(strings.TrimPrefix(v.Name, "QUEUEWATCH_"), "!! bad value !!")
	}
	t.Setenv("PHONES", "123")
	t.Setenv("DATA_DIR", "/elsewhere")
	c, err := Parse()
	if err != nil {
		t.Fatalf("Parse read an unprefixed variable: %v", err)
	}
	if len(c.Phones) != 0 || c.DataDir != "queuewatch-data" {
		t.Errorf("Parse read unprefixed variables: Phones=%v DataDir=%q", c.Phones, c.DataDir)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Var: "QUEUEWATCH_X", Problem: "broken"}
	if got, want := e.Error(), "QUEUEWATCH_X: broken"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestExpectedNamesVariables(t *testing.T) {
	names := make(map[string]bool)
	for _, v := range Vars() {
		names[v.Name] = true
	}
	for name := range expected {
		if !names[name] {
			t.Errorf("expected has an entry for unknown variable %s", name)
		}
	}
}
