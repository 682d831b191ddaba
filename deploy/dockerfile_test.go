package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDockerfileBuildsLikeMakefile keeps the image's go build line equal to
// `make build` (which CI runs), so the static binary CI builds is the one
// the image ships: same CGO_ENABLED, flags and package, -o aside.
func TestDockerfileBuildsLikeMakefile(t *testing.T) {
	mk := readFile(t, "../Makefile")
	df := readFile(t, "Dockerfile")

	ldflags := regexp.MustCompile(`(?m)^LDFLAGS\s*:?=\s*(.*)$`).FindStringSubmatch(mk)
	if ldflags == nil {
		t.Fatal("Makefile: no LDFLAGS")
	}
	makeLine := recipeLine(t, mk, "build")
	makeLine = strings.NewReplacer("$(GO)", "go", "$(LDFLAGS)", strings.TrimSpace(ldflags[1])).Replace(makeLine)

	var dockerLine string
	for _, ins := range instructions(df) {
		if strings.HasPrefix(ins, "RUN ") && strings.Contains(ins, "go build") {
			dockerLine = ins
		}
	}
	if dockerLine == "" {
		t.Fatal("Dockerfile: no RUN with go build")
	}
	// The Dockerfile's RUN also has --mount options before the command.
	if i := strings.Index(dockerLine, "CGO_ENABLED="); i >= 0 {
		dockerLine = dockerLine[i:]
	}

	mkArgs, dfArgs := buildArgs(makeLine), buildArgs(dockerLine)
	if !slices.Equal(mkArgs, dfArgs) {
		t.Errorf("go build differs:\n Makefile:   %q\n Dockerfile: %q", mkArgs, dfArgs)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/queuewatch"} {
		if !slices.Contains(dfArgs, want) {
			t.Errorf("Dockerfile go build lacks %s: %q", want, dfArgs)
		}
	}
	if !slices.ContainsFunc(dfArgs, func(s string) bool { return strings.Contains(s, "-X main.version=VERSION") }) {
		t.Errorf("Dockerfile go build does not stamp main.version from VERSION: %q", dfArgs)
	}
}

// TestDockerfileRuntime checks the final stage: distroless, non-root, the
// binary as entrypoint, the http port exposed.
func TestDockerfileRuntime(t *testing.T) {
	ins := instructions(readFile(t, "Dockerfile"))
	var last []string // instructions of the final stage
	for _, in := range ins {
		if strings.HasPrefix(in, "FROM ") {
			last = nil
		}
		last = append(last, in)
	}
	if len(last) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	from := strings.Fields(last[0])[1]
	if !strings.HasPrefix(from, "gcr.io/distroless/static") || !strings.HasSuffix(from, ":nonroot") {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static...:nonroot", from)
	}
	for _, want := range []string{"USER nonroot:nonroot", "EXPOSE 8080", `ENTRYPOINT ["/queuewatch"]`} {
		if !slices.Contains(last, want) {
			t.Errorf("final stage lacks %s", want)
		}
	}
	for _, in := range ins {
		if f := strings.Fields(in); f[0] == "FROM" && (strings.HasSuffix(f[1], ":latest") || !strings.Contains(f[1], ":")) {
			t.Errorf("%s: pin the base image", in)
		}
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// recipeLine returns the recipe line of a Makefile target that runs go build.
func recipeLine(t *testing.T, mk, target string) string {
	t.Helper()
	lines := strings.Split(mk, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, target+":") {
			continue
		}
		for _, r := range lines[i+1:] {
			if !strings.HasPrefix(r, "\t") {
				break
			}
			if strings.Contains(r, "go build") || strings.Contains(r, "$(GO) build") {
				return strings.TrimSpace(r)
			}
		}
	}
	t.Fatalf("Makefile: target %s has no go build line", target)
	return ""
}

// instructions returns a Dockerfile's instructions, continuation lines
// joined and comments dropped, each with its whitespace collapsed.
func instructions(df string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(df, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		cont := strings.HasSuffix(l, "\\")
		cur.WriteString(strings.TrimSuffix(l, "\\"))
		cur.WriteString(" ")
		if !cont {
			out = append(out, strings.Join(strings.Fields(cur.String()), " "))
			cur.Reset()
		}
	}
	return out
}

// buildArgs splits a shell command line (double quotes group words),
// drops "-o FILE" and writes $(VERSION) and ${VERSION} as VERSION.
func buildArgs(line string) []string {
	line = strings.NewReplacer("$(VERSION)", "VERSION", "${VERSION}", "VERSION").Replace(line)
	var args []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	for i := 0; i < len(args); i++ {
		if args[i] == "-o" && i+1 < len(args) {
			args = slices.Delete(args, i, i+2)
			i--
		}
	}
	return args
}
