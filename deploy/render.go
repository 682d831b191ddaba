package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render builds the kustomization in dir as `kubectl kustomize dir` does
// (no plugins, files only from inside the kustomization roots) and returns
// each resource as one YAML document, in kustomize's output order.
func Render(dir string) ([][]byte, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %s: %w", dir, r.CurId(), err)
		}
		docs = append(docs, b)
	}
	return docs, nil
}

// Join joins documents into one YAML stream, as kubectl apply -f takes it.
func Join(docs [][]byte) []byte {
	return bytes.Join(docs, []byte("---\n"))
}

// Kustomizations lists the kustomizations under root (a deploy directory):
// "base" and "overlays/NAME" for each overlay, as slash paths relative to
// root.
func Kustomizations(root string) ([]string, error) {
	dirs := []string{"base"}
	entries, err := os.ReadDir(filepath.Join(root, "overlays"))
	if err != nil {
		return nil, err
	}
	var overlays []string
	for _, e := range entries {
		if e.IsDir() {
			overlays = append(overlays, path.Join("overlays", e.Name()))
		}
	}
	sort.Strings(overlays)
	return append(dirs, overlays...), nil
}
