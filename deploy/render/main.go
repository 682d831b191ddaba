// Command render prints Kubernetes manifests rendered by the kustomize API,
// as `kubectl kustomize` would, without kubectl or a kustomize binary.
//
// Usage:
//
//	go run ./deploy/render deploy/overlays/dev            # to stdout
//	go run ./deploy/render -out bin/manifests deploy/overlays/*
//
// With -out, each kustomization DIR is written to OUT/<base name of DIR>.yaml.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/queuewatch/queuewatch/deploy"
)

func main() {
	out := flag.String("out", "", "write each kustomization to `DIR`/<name>.yaml instead of stdout")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: render [-out DIR] KUSTOMIZATION_DIR...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, flag.Args(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(out string, dirs []string, stdout io.Writer) error {
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
	}
	for i, dir := range dirs {
		docs, err := deploy.Render(dir)
		if err != nil {
			return err
		}
		y := deploy.Join(docs)
		if out == "" {
			if i > 0 {
				if _, err := io.WriteString(stdout, "---\n"); err != nil {
					return err
				}
			}
			if _, err := stdout.Write(y); err != nil {
				return err
			}
			continue
		}
		name := filepath.Join(out, filepath.Base(filepath.Clean(dir))+".yaml")
		if err := os.WriteFile(name, y, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", name)
	}
	return nil
}
