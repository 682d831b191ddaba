package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunWritesEachOverlay(t *testing.T) {
	out := t.TempDir()
	if err := run(out, []string{"../overlays/dev", "../overlays/prod"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dev.yaml", "prod.yaml"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "kind: Deployment") || !strings.Contains(string(b), "\n---\n") {
			t.Errorf("%s does not look like rendered manifests:\n%s", name, b)
		}
	}
}

func TestRunStdout(t *testing.T) {
	var buf bytes.Buffer
	if err := run("", []string{"../overlays/dev"}, &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "kind: StatefulSet") {
		t.Errorf("dev overlay without the NATS StatefulSet:\n%s", buf.String())
	}
	if err := run("", []string{"../no-such-overlay"}, &buf); err == nil {
		t.Error("no error for a missing kustomization")
	}
}
