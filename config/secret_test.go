package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kelseyhightower/envconfig"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const distinctive = "sk-DISTINCTIVE-7f3a9c"

func TestSecretFormatting(t *testing.T) {
	s := Secret(distinctive)
	tests := []struct{ format, want string }{
		{"%v", "[redacted]"},
		{"%+v", "[redacted]"},
		{"%s", "[redacted]"},
		{"%q", `"[redacted]"`},
		{"%#v", `config.Secret("[redacted]")`},
		{"%12s|", "  [redacted]|"},
		{"%-12s|", "[redacted]  |"},
		{"%x", fmt.Sprintf("%x", "[redacted]")},
		{"%d", "%!d(string=[redacted])"},
	}
	for _, tt := range tests {
		if got := fmt.Sprintf(tt.format, s); got != tt.want {
			t.Errorf("Sprintf(%q) = %q, want %q", tt.format, got, tt.want)
		}
	}
	if got := fmt.Sprint(s) + fmt.Sprintln(s) + s.String() + s.GoString(); strings.Contains(got, distinctive) {
		t.Errorf("secret printed: %s", got)
	}
	if got := s.Reveal(); got != distinctive {
		t.Errorf("Reveal() = %q", got)
	}
}

func TestSecretEmpty(t *testing.T) {
	var s Secret
	if got := s.String(); got != "" {
		t.Errorf("String() = %q, want empty", got)
	}
	if got := fmt.Sprintf("%q %#v", s, s); got != `"" config.Secret("")` {
		t.Errorf("formatted empty secret = %s", got)
	}
}

func TestSecretEncoding(t *testing.T) {
	s := Secret(distinctive)
	b, err := json.Marshal(map[string]Secret{"k": s})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"k":"[redacted]"}`; got != want {
		t.Errorf("json = %s, want %s", got, want)
	}
	text, err := s.MarshalText()
	if err != nil || string(text) != "[redacted]" {
		t.Errorf("MarshalText() = %q, %v", text, err)
	}
}

func TestSecretDecodedByEnvconfig(t *testing.T) {
	setEnv(t, map[string]string{
		"QUEUEWATCH_API_KEY":       distinctive,
		"QUEUEWATCH_NATS_USER":     "u",
		"QUEUEWATCH_NATS_PASSWORD": distinctive + "-pw",
		"QUEUEWATCH_NATS_TOKEN":    distinctive + "-tok",
	})
	c, err := Parse()
	if err != nil {
		t.Fatal(err)
	}
	if c.APIKey.Reveal() != distinctive || c.NATSPassword.Reveal() != distinctive+"-pw" || c.NATSToken.Reveal() != distinctive+"-tok" {
		t.Errorf("secrets not decoded: %q %q %q", c.APIKey.Reveal(), c.NATSPassword.Reveal(), c.NATSToken.Reveal())
	}
}

// TestConfigDoesNotLeakSecrets prints and encodes a whole Config in every
// usual way and checks the secrets never show.
func TestConfigDoesNotLeakSecrets(t *testing.T) {
	c := &Config{APIKey: distinctive, NATSPassword: distinctive, NATSToken: distinctive, NATSUser: "u"}

	var out bytes.Buffer
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		fmt.Fprintf(&out, format+"\n", c)
		fmt.Fprintf(&out, format+"\n", *c)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(b)

	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&out), zap.DebugLevel)
	zap.New(core).Info("config",
		zap.Any("config", c),
		zap.Any("key", c.APIKey),
		zap.Stringer("password", c.NATSPassword),
		zap.Reflect("token", c.NATSToken))

	if strings.Contains(out.String(), distinctive) {
		t.Errorf("secret leaked:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "[redacted]") {
		t.Errorf("no [redacted] marker in output:\n%s", out.String())
	}
}

// TestErrorsDoNotLeakSecrets triggers errors while secrets are set, including
// errors about the secret variables themselves and a key file.
func TestErrorsDoNotLeakSecrets(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(distinctive), 0o600); err != nil {
		t.Fatal(err)
	}
	envs := []map[string]string{
		{"QUEUEWATCH_API_KEY": distinctive, "QUEUEWATCH_API_KEY_FILE": keyFile},
		{"QUEUEWATCH_NATS_PASSWORD": distinctive},
		{"QUEUEWATCH_NATS_TOKEN": distinctive, "QUEUEWATCH_NATS_USER": "u"},
		{"QUEUEWATCH_API_KEY": distinctive, "QUEUEWATCH_POLL_INTERVAL": "x"},
		{"QUEUEWATCH_API_KEY_FILE": keyFile},
		{"QUEUEWATCH_NATS_URL": "nats://u:" + distinctive + "@host,http://u:" + distinctive + "@host"},
		{"QUEUEWATCH_API_URL": "ftp://u:" + distinctive + "@host"},
	}
	for _, env := range envs {
		setEnv(t, env)
		_, err := Load()
		if err == nil {
			t.Fatalf("env %v: no error", env)
		}
		if strings.Contains(err.Error(), distinctive) {
			t.Errorf("error leaks secret: %v", err)
		}
	}
}

func TestParseErrorRedactsSecretVars(t *testing.T) {
	// Secrets are strings, so envconfig cannot fail on them; check the
	// translation still redacts should that ever change.
	e := parseError(&envconfig.ParseError{KeyName: "QUEUEWATCH_NATS_TOKEN", TypeName: "config.Secret", Value: distinctive})
	if strings.Contains(e.Error(), distinctive) || !strings.Contains(e.Error(), "<redacted>") {
		t.Errorf("parse error = %q", e)
	}
}
