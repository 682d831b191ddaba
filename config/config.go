package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/kelseyhightower/envconfig"

	"github.com/queuewatch/queuewatch/periskope"
)

// Config holds queuewatch's settings. Each field's `envconfig` tag is the
// full name of its environment variable.
//
// The tags hold full names and Parse calls envconfig with an empty prefix on
// purpose: with a prefix, envconfig falls back to the bare tag name (PHONES,
// DATA_DIR, ...) when the prefixed variable is unset, and queuewatch must
// read only QUEUEWATCH_* variables.
type Config struct {
	APIKey     Secret `envconfig:"QUEUEWATCH_API_KEY" desc:"Periskope API key (secret); or use QUEUEWATCH_API_KEY_FILE"`
	APIKeyFile string `envconfig:"QUEUEWATCH_API_KEY_FILE" desc:"file holding the Periskope API key, e.g. a Kubernetes secret mount; whitespace is trimmed"`
	APIURL     string `envconfig:"QUEUEWATCH_API_URL" default:"https://api.periskope.app/v1" desc:"Periskope API base URL (http or https)"`

	Phones     []string `envconfig:"QUEUEWATCH_PHONES" desc:"comma-separated phones whose jobs are all polled: numbers with country code or phone ids"`
	Broadcasts []string `envconfig:"QUEUEWATCH_BROADCASTS" desc:"comma-separated phone:broadcast_id pairs whose jobs are polled"`

	PollInterval   time.Duration `envconfig:"QUEUEWATCH_POLL_INTERVAL" default:"5s" desc:"time between polls of each target"`
	RequestTimeout time.Duration `envconfig:"QUEUEWATCH_REQUEST_TIMEOUT" default:"10s" desc:"timeout of one API request"`
	RateLimit      float64       `envconfig:"QUEUEWATCH_RATE_LIMIT" default:"10" desc:"API requests per second across all targets; 0 = unlimited"`
	ShutdownGrace  time.Duration `envconfig:"QUEUEWATCH_SHUTDOWN_GRACE" default:"20s" desc:"time allowed for in-flight work on shutdown"`

	NATSURL      string `envconfig:"QUEUEWATCH_NATS_URL" desc:"comma-separated NATS server URLs (nats, tls, ws, wss); empty = start an embedded server"`
	NATSCreds    string `envconfig:"QUEUEWATCH_NATS_CREDS" desc:"NATS credentials file"`
	NATSUser     string `envconfig:"QUEUEWATCH_NATS_USER" desc:"NATS user name; needs QUEUEWATCH_NATS_PASSWORD"`
	NATSPassword Secret `envconfig:"QUEUEWATCH_NATS_PASSWORD" desc:"NATS password (secret)"`
	NATSToken    Secret `envconfig:"QUEUEWATCH_NATS_TOKEN" desc:"NATS token (secret)"`
	NATSTLSCert  string `envconfig:"QUEUEWATCH_NATS_TLS_CERT" desc:"NATS client certificate file; needs QUEUEWATCH_NATS_TLS_KEY"`
	NATSTLSKey   string `envconfig:"QUEUEWATCH_NATS_TLS_KEY" desc:"NATS client key file; needs QUEUEWATCH_NATS_TLS_CERT"`
	NATSTLSCA    string `envconfig:"QUEUEWATCH_NATS_TLS_CA" desc:"CA file to verify the NATS server"`
	DataDir      string `envconfig:"QUEUEWATCH_DATA_DIR" default:"queuewatch-data" desc:"storage directory of the embedded NATS server"`
	NATSListen   string `envconfig:"QUEUEWATCH_NATS_LISTEN" default:"127.0.0.1:4222" desc:"host:port the embedded NATS server listens on; port 0 = random"`

	Subject         string        `envconfig:"QUEUEWATCH_SUBJECT" default:"queue.job.status_changed" desc:"NATS subject of status-change events"`
	SubjectDetail   bool          `envconfig:"QUEUEWATCH_SUBJECT_DETAIL" default:"false" desc:"publish on <subject>.<phone>.<status> so consumers can filter on the server"`
	Stream          string        `envconfig:"QUEUEWATCH_STREAM" default:"QUEUE_JOB_EVENTS" desc:"JetStream stream holding the events"`
	KVBucket        string        `envconfig:"QUEUEWATCH_KV_BUCKET" default:"queuewatch_snapshots" desc:"JetStream KV bucket holding the last seen job statuses"`
	Replicas        int           `envconfig:"QUEUEWATCH_REPLICAS" default:"1" desc:"replicas of the stream and the bucket (1-5)"`
	DuplicateWindow time.Duration `envconfig:"QUEUEWATCH_DUPLICATE_WINDOW" default:"15m" desc:"stream duplicate-detection window"`
	SnapshotTTL     time.Duration `envconfig:"QUEUEWATCH_SNAPSHOT_TTL" default:"168h" desc:"how long a job's last status is kept; must exceed QUEUEWATCH_DUPLICATE_WINDOW"`
	StreamMaxAge    time.Duration `envconfig:"QUEUEWATCH_STREAM_MAX_AGE" default:"168h" desc:"how long events are kept in the stream; 0 = forever"`
	EmitBaseline    bool          `envconfig:"QUEUEWATCH_EMIT_BASELINE" default:"false" desc:"also publish an event for jobs seen for the first time"`

	HTTPAddr  string `envconfig:"QUEUEWATCH_HTTP_ADDR" default:":8080" desc:"host:port of the health and metrics HTTP server"`
	LogLevel  string `envconfig:"QUEUEWATCH_LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`
	LogFormat string `envconfig:"QUEUEWATCH_LOG_FORMAT" default:"json" desc:"log format: json or console"`
}

// Error is a problem with one variable.
type Error struct {
	Var      string // full variable name, e.g. QUEUEWATCH_POLL_INTERVAL
	Problem  string // what is wrong, e.g. `invalid value "abc"`
	Expected string // the expected form; may be empty
}

// Error returns "VAR: problem: expected form".
func (e *Error) Error() string {
	if e.Expected == "" {
		return e.Var + ": " + e.Problem
	}
	return e.Var + ": " + e.Problem + ": expected " + e.Expected
}

// expected is the expected form of each variable, shared by parse and
// validation errors.
var expected = map[string]string{
	"QUEUEWATCH_API_KEY":          "the Periskope API key in QUEUEWATCH_API_KEY or a file named by QUEUEWATCH_API_KEY_FILE",
	"QUEUEWATCH_API_KEY_FILE":     "a readable file holding the Periskope API key",
	"QUEUEWATCH_API_URL":          "an absolute http or https URL such as https://api.periskope.app/v1",
	"QUEUEWATCH_PHONES":           "comma-separated phone numbers with country code or phone ids (letters, digits, _ and -)",
	"QUEUEWATCH_BROADCASTS":       "comma-separated phone:broadcast_id pairs (letters, digits, _ and -)",
	"QUEUEWATCH_POLL_INTERVAL":    positiveDuration,
	"QUEUEWATCH_REQUEST_TIMEOUT":  positiveDuration,
	"QUEUEWATCH_RATE_LIMIT":       "a number of requests per second, 0 or more (0 = unlimited)",
	"QUEUEWATCH_SHUTDOWN_GRACE":   positiveDuration,
	"QUEUEWATCH_NATS_URL":         "comma-separated nats://, tls://, ws:// or wss:// URLs with a host, or empty for an embedded server",
	"QUEUEWATCH_NATS_CREDS":       "an existing file",
	"QUEUEWATCH_NATS_USER":        "QUEUEWATCH_NATS_PASSWORD to be set too",
	"QUEUEWATCH_NATS_PASSWORD":    "QUEUEWATCH_NATS_USER to be set too",
	"QUEUEWATCH_NATS_TLS_CERT":    "an existing file, set together with QUEUEWATCH_NATS_TLS_KEY",
	"QUEUEWATCH_NATS_TLS_KEY":     "an existing file, set together with QUEUEWATCH_NATS_TLS_CERT",
	"QUEUEWATCH_NATS_TLS_CA":      "an existing file",
	"QUEUEWATCH_DATA_DIR":         "a directory path",
	"QUEUEWATCH_NATS_LISTEN":      "host:port such as 127.0.0.1:4222 (port 0 = random)",
	"QUEUEWATCH_SUBJECT":          "a NATS subject: dot-separated non-empty tokens without spaces or wildcards (* >)",
	"QUEUEWATCH_SUBJECT_DETAIL":   "true or false",
	"QUEUEWATCH_STREAM":           "a name of letters, digits, _ and -",
	"QUEUEWATCH_KV_BUCKET":        "a name of letters, digits, _ and -",
	"QUEUEWATCH_REPLICAS":         "an integer from 1 to 5",
	"QUEUEWATCH_DUPLICATE_WINDOW": positiveDuration,
	"QUEUEWATCH_SNAPSHOT_TTL":     positiveDuration,
	"QUEUEWATCH_STREAM_MAX_AGE":   "a duration such as 168h, or 0 to keep events forever",
	"QUEUEWATCH_EMIT_BASELINE":    "true or false",
	"QUEUEWATCH_HTTP_ADDR":        "host:port such as :8080 or 127.0.0.1:8080",
	"QUEUEWATCH_LOG_LEVEL":        "debug, info, warn or error",
	"QUEUEWATCH_LOG_FORMAT":       "json or console",
}

const positiveDuration = "a positive duration such as 5s or 1m30s"

// idPattern is the pattern of phone ids, broadcast ids, stream and bucket names.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Parse reads and validates the environment. It does not require an API key
// or targets; see Load.
func Parse() (*Config, error) {
	var c Config
	// Empty prefix: the tags hold full names (see Config).
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, parseError(pe)
		}
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load is Parse followed by RequireRun: the settings `queuewatch run` needs.
func Load() (*Config, error) {
	c, err := Parse()
	if err != nil {
		return nil, err
	}
	if err := c.RequireRun(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseError translates an envconfig conversion failure into an *Error,
// redacting the value of secret variables.
func parseError(pe *envconfig.ParseError) *Error {
	value := strconv.Quote(pe.Value)
	if isSecret(pe.KeyName) {
		value = "<redacted>"
	}
	exp, ok := expected[pe.KeyName]
	if !ok {
		exp = "a value of type " + pe.TypeName
	}
	return &Error{Var: pe.KeyName, Problem: "invalid value " + value, Expected: exp}
}

// invalid reports a bad value of a variable with its expected form.
func invalid(v string, value any) *Error {
	return &Error{Var: v, Problem: fmt.Sprintf("invalid value %q", fmt.Sprint(value)), Expected: expected[v]}
}

// Validate checks the format of every setting and returns the first
// problem, in declaration order.
func (c *Config) Validate() error {
	return first(
		c.checkAPIKeySources(),
		checkURL("QUEUEWATCH_API_URL", c.APIURL, "http", "https"),
		checkList("QUEUEWATCH_PHONES", c.Phones, func(s string) bool { _, ok := parsePhone(s); return ok }),
		checkList("QUEUEWATCH_BROADCASTS", c.Broadcasts, func(s string) bool { _, ok := parseBroadcast(s); return ok }),
		checkPositive("QUEUEWATCH_POLL_INTERVAL", c.PollInterval),
		checkPositive("QUEUEWATCH_REQUEST_TIMEOUT", c.RequestTimeout),
		checkRate(c.RateLimit),
		c.checkShutdownGrace(),
		c.checkNATSURL(),
		checkFile("QUEUEWATCH_NATS_CREDS", c.NATSCreds),
		c.checkNATSAuth(),
		c.checkTLS(),
		checkFile("QUEUEWATCH_NATS_TLS_CA", c.NATSTLSCA),
		checkNotEmpty("QUEUEWATCH_DATA_DIR", c.DataDir),
		checkHostPort("QUEUEWATCH_NATS_LISTEN", c.NATSListen),
		checkSubject(c.Subject),
		checkName("QUEUEWATCH_STREAM", c.Stream),
		checkName("QUEUEWATCH_KV_BUCKET", c.KVBucket),
		checkReplicas(c.Replicas),
		checkPositive("QUEUEWATCH_DUPLICATE_WINDOW", c.DuplicateWindow),
		c.checkSnapshotTTL(),
		checkMaxAge(c.StreamMaxAge),
		checkHostPort("QUEUEWATCH_HTTP_ADDR", c.HTTPAddr),
		checkOneOf("QUEUEWATCH_LOG_LEVEL", c.LogLevel, "debug", "info", "warn", "error"),
		checkOneOf("QUEUEWATCH_LOG_FORMAT", c.LogFormat, "json", "console"),
	)
}

// RequireRun checks what `queuewatch run` needs beyond Validate. It reads
// QUEUEWATCH_API_KEY_FILE into APIKey (and then clears APIKeyFile), requires
// a non-empty key (surrounding whitespace is trimmed) and at least one
// target.
func (c *Config) RequireRun() error {
	if err := c.checkAPIKeySources(); err != nil {
		return err
	}
	if c.APIKeyFile != "" {
		const v = "QUEUEWATCH_API_KEY_FILE"
		b, err := os.ReadFile(c.APIKeyFile)
		if err != nil {
			return &Error{Var: v, Problem: fmt.Sprintf("cannot read %q: %v", c.APIKeyFile, cause(err)), Expected: expected[v]}
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return &Error{Var: v, Problem: fmt.Sprintf("file %q is empty", c.APIKeyFile), Expected: expected[v]}
		}
		c.APIKey, c.APIKeyFile = Secret(key), ""
	}
	c.APIKey = Secret(strings.TrimSpace(c.APIKey.Reveal()))
	if c.APIKey == "" {
		return &Error{Var: "QUEUEWATCH_API_KEY", Problem: "not set", Expected: expected["QUEUEWATCH_API_KEY"]}
	}
	if len(c.Targets()) == 0 {
		return &Error{Var: "QUEUEWATCH_PHONES", Problem: "no targets (QUEUEWATCH_PHONES and QUEUEWATCH_BROADCASTS are both empty)",
			Expected: "at least one phone in QUEUEWATCH_PHONES or phone:broadcast_id pair in QUEUEWATCH_BROADCASTS"}
	}
	return nil
}

// Targets returns what to poll: each phone, then each broadcast, without
// duplicates, in order. Phones are normalised (spaces and a leading '+'
// removed). Entries that Validate would reject are skipped.
func (c *Config) Targets() []periskope.Target {
	var out []periskope.Target
	seen := make(map[periskope.Target]bool)
	add := func(t periskope.Target, ok bool) {
		if ok && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	for _, s := range c.Phones {
		p, ok := parsePhone(s)
		add(periskope.Target{Phone: p}, ok)
	}
	for _, s := range c.Broadcasts {
		add(parseBroadcast(s))
	}
	return out
}

// EmbeddedNATS reports whether queuewatch starts its own NATS server, that
// is, whether QUEUEWATCH_NATS_URL is empty.
func (c *Config) EmbeddedNATS() bool { return c.NATSURL == "" }

// parsePhone trims s, removes a leading '+' and inner spaces, and reports
// whether the result is a valid phone number or id.
func parsePhone(s string) (string, bool) {
	p := strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(s), "+"), " ", "")
	return p, idPattern.MatchString(p)
}

// parseBroadcast parses a "phone:broadcast_id" pair.
func parseBroadcast(s string) (periskope.Target, bool) {
	phone, id, found := strings.Cut(s, ":")
	p, ok := parsePhone(phone)
	id = strings.TrimSpace(id)
	return periskope.Target{Phone: p, BroadcastID: id}, found && ok && idPattern.MatchString(id)
}

// first returns the first non-nil problem. It takes *Error so that a nil
// *Error never becomes a non-nil error.
func first(errs ...*Error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func (c *Config) checkAPIKeySources() *Error {
	if c.APIKey != "" && c.APIKeyFile != "" {
		return &Error{Var: "QUEUEWATCH_API_KEY_FILE", Problem: "set together with QUEUEWATCH_API_KEY",
			Expected: "only one of QUEUEWATCH_API_KEY and QUEUEWATCH_API_KEY_FILE"}
	}
	return nil
}

// checkURL checks one absolute URL with one of the schemes and a host.
// Problems show the URL with any user info (user, password, token) redacted.
func checkURL(v, s string, schemes ...string) *Error {
	u, err := url.Parse(s)
	if err != nil {
		return &Error{Var: v, Problem: "not a valid URL", Expected: expected[v]}
	}
	for _, scheme := range schemes {
		if u.Scheme == scheme && u.Host != "" {
			return nil
		}
	}
	if u.User != nil { // a user, password or token: never print it
		u.User = url.User("redacted")
		s = u.String()
	}
	return invalid(v, s)
}

func (c *Config) checkNATSURL() *Error {
	const v = "QUEUEWATCH_NATS_URL"
	if c.NATSURL == "" {
		return nil
	}
	for i, s := range strings.Split(c.NATSURL, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return &Error{Var: v, Problem: fmt.Sprintf("entry %d is empty", i+1), Expected: expected[v]}
		}
		if err := checkURL(v, s, "nats", "tls", "ws", "wss"); err != nil {
			err.Problem = fmt.Sprintf("entry %d: %s", i+1, err.Problem)
			return err
		}
	}
	return nil
}

// checkList checks each entry of a comma-separated list.
func checkList(v string, list []string, valid func(string) bool) *Error {
	for i, s := range list {
		switch {
		case strings.TrimSpace(s) == "":
			return &Error{Var: v, Problem: fmt.Sprintf("entry %d is empty", i+1), Expected: expected[v]}
		case !valid(s):
			return &Error{Var: v, Problem: fmt.Sprintf("invalid entry %d %q", i+1, s), Expected: expected[v]}
		}
	}
	return nil
}

func checkPositive(v string, d time.Duration) *Error {
	if d <= 0 {
		return invalid(v, d)
	}
	return nil
}

func checkMaxAge(d time.Duration) *Error {
	if d < 0 {
		return invalid("QUEUEWATCH_STREAM_MAX_AGE", d)
	}
	return nil
}

func (c *Config) checkShutdownGrace() *Error {
	const v = "QUEUEWATCH_SHUTDOWN_GRACE"
	if err := checkPositive(v, c.ShutdownGrace); err != nil {
		return err
	}
	if c.ShutdownGrace < c.RequestTimeout {
		return &Error{Var: v, Problem: fmt.Sprintf("%s is shorter than QUEUEWATCH_REQUEST_TIMEOUT (%s)", c.ShutdownGrace, c.RequestTimeout),
			Expected: "a duration of at least QUEUEWATCH_REQUEST_TIMEOUT, which bounds the publish and commit that shutdown lets finish"}
	}
	return nil
}

func (c *Config) checkSnapshotTTL() *Error {
	const v = "QUEUEWATCH_SNAPSHOT_TTL"
	if err := checkPositive(v, c.SnapshotTTL); err != nil {
		return err
	}
	if c.SnapshotTTL <= c.DuplicateWindow {
		return &Error{Var: v, Problem: fmt.Sprintf("%s is not greater than QUEUEWATCH_DUPLICATE_WINDOW (%s)", c.SnapshotTTL, c.DuplicateWindow),
			Expected: "a duration greater than QUEUEWATCH_DUPLICATE_WINDOW, otherwise a job seen again after its snapshot expired could publish its event again once the stream's duplicate detection has forgotten it"}
	}
	return nil
}

func checkRate(r float64) *Error {
	if !(r >= 0) || math.IsInf(r, 1) { // also rejects NaN
		return invalid("QUEUEWATCH_RATE_LIMIT", strconv.FormatFloat(r, 'g', -1, 64))
	}
	return nil
}

func checkReplicas(n int) *Error {
	if n < 1 || n > 5 {
		return invalid("QUEUEWATCH_REPLICAS", n)
	}
	return nil
}

// checkFile checks that path, when set, names an existing file. Problems
// name the path, never the contents.
func checkFile(v, path string) *Error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return &Error{Var: v, Problem: fmt.Sprintf("cannot read %q: %v", path, cause(err)), Expected: expected[v]}
	case fi.IsDir():
		return &Error{Var: v, Problem: fmt.Sprintf("%q is a directory", path), Expected: expected[v]}
	}
	return nil
}

// cause strips the operation and path from an *os.PathError.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (c *Config) checkNATSAuth() *Error {
	switch {
	case c.NATSUser != "" && c.NATSPassword == "":
		return &Error{Var: "QUEUEWATCH_NATS_USER", Problem: "set without QUEUEWATCH_NATS_PASSWORD", Expected: expected["QUEUEWATCH_NATS_USER"]}
	case c.NATSUser == "" && c.NATSPassword != "":
		return &Error{Var: "QUEUEWATCH_NATS_PASSWORD", Problem: "set without QUEUEWATCH_NATS_USER", Expected: expected["QUEUEWATCH_NATS_PASSWORD"]}
	}
	return nil
}

func (c *Config) checkTLS() *Error {
	switch {
	case c.NATSTLSCert != "" && c.NATSTLSKey == "":
		return &Error{Var: "QUEUEWATCH_NATS_TLS_CERT", Problem: "set without QUEUEWATCH_NATS_TLS_KEY", Expected: expected["QUEUEWATCH_NATS_TLS_CERT"]}
	case c.NATSTLSCert == "" && c.NATSTLSKey != "":
		return &Error{Var: "QUEUEWATCH_NATS_TLS_KEY", Problem: "set without QUEUEWATCH_NATS_TLS_CERT", Expected: expected["QUEUEWATCH_NATS_TLS_KEY"]}
	}
	if err := checkFile("QUEUEWATCH_NATS_TLS_CERT", c.NATSTLSCert); err != nil {
		return err
	}
	return checkFile("QUEUEWATCH_NATS_TLS_KEY", c.NATSTLSKey)
}

func checkNotEmpty(v, s string) *Error {
	if strings.TrimSpace(s) == "" {
		return &Error{Var: v, Problem: "empty", Expected: expected[v]}
	}
	return nil
}

// checkHostPort checks host:port with a numeric port; the host may be empty.
func checkHostPort(v, s string) *Error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return invalid(v, s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return invalid(v, s)
	}
	return nil
}

func checkSubject(s string) *Error {
	for _, token := range strings.Split(s, ".") {
		if token == "" || strings.ContainsFunc(token, func(r rune) bool {
			return r == ' ' || r == '*' || r == '>' || !unicode.IsPrint(r)
		}) {
			return invalid("QUEUEWATCH_SUBJECT", s)
		}
	}
	return nil
}

func checkName(v, s string) *Error {
	if !idPattern.MatchString(s) {
		return invalid(v, s)
	}
	return nil
}

func checkOneOf(v, s string, allowed ...string) *Error {
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return invalid(v, s)
}
