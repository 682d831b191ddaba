package deploy

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/queuewatch/queuewatch/config"
)

// servedPaths are the HTTP paths queuewatch serves on QUEUEWATCH_HTTP_ADDR
// that a probe may use (cmd/queuewatch/http.go): /livez and its alias
// /healthz say the poll loop is alive and never depend on Periskope or NATS;
// /readyz says NATS is connected, the stream and bucket are ready and the
// API key is accepted, and answers 503 after SIGTERM. Keep in step with the
// binary.
var servedPaths = []string{"/livez", "/healthz", "/readyz"}

// livePaths may back a liveness or startup probe: a probe on /readyz would
// restart every pod during a NATS or Periskope outage.
var livePaths = []string{"/livez", "/healthz"}

const (
	app          = "queuewatch" // Deployment, container, ServiceAccount and Secret name
	nameLabel    = "app.kubernetes.io/name"
	nonrootUID   = 65532 // distroless "nonroot", the image's USER
	exampleFile  = "base/secret.example.yaml"
	defaultGrace = 30 // seconds, Kubernetes' default terminationGracePeriodSeconds
)

// runtimeVars are variables the Go runtime (not queuewatch) reads; the
// queuewatch container may set them besides those config.Vars lists.
var runtimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG", "TZ"}

// fileVars hold paths of files queuewatch reads; in the pod they must lie
// under a volume mount.
var fileVars = []string{"QUEUEWATCH_API_KEY_FILE", "QUEUEWATCH_NATS_CREDS",
	"QUEUEWATCH_NATS_TLS_CERT", "QUEUEWATCH_NATS_TLS_KEY", "QUEUEWATCH_NATS_TLS_CA"}

// policy is what a kustomization must meet beyond the common rules.
type policy struct {
	minReplicas       int32 // of the queuewatch Deployment
	minStreamReplicas int   // QUEUEWATCH_REPLICAS
	// partial: not applied on its own (base), so a NATS URL may name a
	// Service that only the overlays add.
	partial bool
}

// policies by kustomization; the rest get {1, 1, false}.
var policies = map[string]policy{
	"base":          {minReplicas: 1, minStreamReplicas: 1, partial: true},
	"overlays/prod": {minReplicas: 2, minStreamReplicas: 3},
}

// required kustomizations: the test fails if one disappears.
var required = []string{"base", "overlays/dev", "overlays/prod"}

func TestManifests(t *testing.T) {
	for _, err := range checkTree(".") {
		t.Error(err)
	}
}

// TestRender shows that every kustomization renders; -v prints the sizes.
func TestRender(t *testing.T) {
	dirs, err := Kustomizations(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		docs, err := Render(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d resources, %d bytes", dir, len(docs), len(Join(docs)))
	}
}

// TestChecksCatchTypos injects one mistake at a time into a copy of the
// tree and expects the checks to name it. The unmodified copy must pass, so
// a failure is the mistake's, not the copy's.
func TestChecksCatchTypos(t *testing.T) {
	cases := []struct {
		name, file, old, new string
		want                 string // in one of the errors
	}{
		{"misspelt field", "base/deployment.yaml", "livenessProbe:", "livenesProbe:", "livenesProbe"},
		{"field in wrong case", "base/deployment.yaml", "readinessProbe:", "readinessprobe:", "readinessprobe"},
		{"unknown variable", "base/config.env", "QUEUEWATCH_POLL_INTERVAL=", "QUEUEWATCH_POL_INTERVAL=", "QUEUEWATCH_POL_INTERVAL"},
		{"misspelt prefix", "base/config.env", "QUEUEWATCH_LOG_LEVEL=", "QUEUEWACH_LOG_LEVEL=", "QUEUEWACH_LOG_LEVEL"},
		{"bad value", "base/config.env", "QUEUEWATCH_POLL_INTERVAL=5s", "QUEUEWATCH_POLL_INTERVAL=5", "QUEUEWATCH_POLL_INTERVAL"},
		{"unserved probe path", "base/deployment.yaml", "path: /readyz", "path: /ready", `"/ready"`},
		{"liveness on readyz", "base/deployment.yaml", "path: /livez\n              port: http\n            periodSeconds: 10",
			"path: /readyz\n              port: http\n            periodSeconds: 10", "liveness"},
		{"probe port", "base/deployment.yaml", "path: /livez\n              port: http", "path: /livez\n              port: htp", "htp"},
		{"latest tag", "base/deployment.yaml", "queuewatch:0.1.0", "queuewatch:latest", "latest"},
		{"no tag", "base/deployment.yaml", "ghcr.io/queuewatch/queuewatch:0.1.0", "ghcr.io/queuewatch/queuewatch", "tag"},
		{"nats latest", "overlays/dev/nats.yaml", "nats:2.15.2-alpine", "nats:latest", "latest"},
		{"no memory limit", "base/deployment.yaml", "              cpu: 500m\n              memory: 256Mi\n", "              cpu: 500m\n", "limits.memory"},
		{"writable root", "base/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"root user", "base/deployment.yaml", "            runAsUser: 65532\n", "            runAsUser: 0\n", "runAsUser"},
		{"capabilities kept", "overlays/dev/nats.yaml", `drop: ["ALL"]`, `drop: ["NET_RAW"]`, "ALL"},
		{"short grace", "base/deployment.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 20", "terminationGracePeriodSeconds"},
		{"token mounted", "base/serviceaccount.yaml", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "token"},
		{"service selector", "base/service.yaml", "  selector:\n    app.kubernetes.io/name: queuewatch", "  selector:\n    app.kubernetes.io/name: queuewatcher", "selector"},
		{"scrape port", "base/service.yaml", `prometheus.io/port: "8080"`, `prometheus.io/port: "9090"`, "prometheus.io/port"},
		{"pdb blocks drains", "base/poddisruptionbudget.yaml", "maxUnavailable: 1", "minAvailable: 1", "disruption"},
		{"api key path", "base/config.env", "/var/run/secrets/queuewatch/api-key", "/var/run/secrets/queuewatch/apikey", "QUEUEWATCH_API_KEY_FILE"},
		{"secret key", "base/deployment.yaml", "- key: api-key", "- key: apikey", "apikey"},
		{"embedded nats", "base/config.env", "QUEUEWATCH_NATS_URL=nats://nats:4222", "QUEUEWATCH_NATS_URL=", "QUEUEWATCH_NATS_URL"},
		{"dev nats host", "overlays/dev/config.env", "nats://nats:4222", "nats://nat:4222", `"nat"`},
		{"dev stream replicas", "overlays/dev/config.env", "QUEUEWATCH_REPLICAS=1", "QUEUEWATCH_REPLICAS=3", "QUEUEWATCH_REPLICAS"},
		{"prod replicas", "overlays/prod/deployment-patch.yaml", "replicas: 3", "replicas: 1", "replicas"},
		{"prod stream replicas", "overlays/prod/config.env", "QUEUEWATCH_REPLICAS=3", "QUEUEWATCH_REPLICAS=1", "QUEUEWATCH_REPLICAS"},
		{"real-looking key", exampleFile, "REPLACE_WITH_YOUR_PERISKOPE_API_KEY", "pk_live_0123456789", "placeholder"},
		{"unknown kind", "overlays/dev/nats.yaml", "kind: StatefulSet", "kind: StatefullSet", "StatefullSet"},
		{"quantity", "base/deployment.yaml", "memory: 64Mi", "memory: 64MiB", "quantities must match"},
	}

	t.Run("unmodified", func(t *testing.T) {
		dir := copyTree(t)
		for _, err := range checkTree(dir) {
			t.Error(err)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyTree(t)
			name := filepath.Join(dir, filepath.FromSlash(c.file))
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), c.old) {
				t.Fatalf("%s does not contain %q: update the test case", c.file, c.old)
			}
			b = []byte(strings.Replace(string(b), c.old, c.new, 1))
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
			errs := checkTree(dir)
			if len(errs) == 0 {
				t.Fatalf("no error reported for %s", c.name)
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), c.want) {
					t.Logf("reported: %v", err)
					return
				}
			}
			t.Errorf("no error mentions %q; got:\n%v", c.want, errors.Join(errs...))
		})
	}
}

// copyTree copies the deploy directory (base, overlays, ...) to a temporary
// directory and returns it.
func copyTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkTree renders every kustomization under root (a deploy directory),
// decodes the resources strictly and checks them against the policy. It
// returns every problem found.
func checkTree(root string) []error {
	var errs []error
	example, err := loadSecretExample(filepath.Join(root, filepath.FromSlash(exampleFile)))
	if err != nil {
		errs = append(errs, err)
	}
	dirs, err := Kustomizations(root)
	if err != nil {
		return append(errs, err)
	}
	for _, r := range required {
		if !slices.Contains(dirs, r) {
			errs = append(errs, fmt.Errorf("kustomization %s is missing", r))
		}
	}
	for _, dir := range dirs {
		m, derrs := load(root, dir)
		errs = append(errs, derrs...)
		if m == nil {
			continue
		}
		c := &checker{m: m, example: example, policy: policyFor(dir)}
		c.check()
		errs = append(errs, c.errs...)
	}
	return errs
}

func policyFor(dir string) policy {
	if p, ok := policies[dir]; ok {
		return p
	}
	return policy{minReplicas: 1, minStreamReplicas: 1}
}

// manifests are the decoded resources of one kustomization.
type manifests struct {
	dir             string
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	pdbs            []*policyv1.PodDisruptionBudget
}

// kinds maps apiVersion/kind to the k8s.io/api type a document is decoded
// into. Any other kind fails: add it here, with checks, when a manifest
// needs it.
var kinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                     func() any { return new(corev1.Secret) },
	"v1/Service":                    func() any { return new(corev1.Service) },
	"v1/ServiceAccount":             func() any { return new(corev1.ServiceAccount) },
	"apps/v1/Deployment":            func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet":           func() any { return new(appsv1.StatefulSet) },
	"policy/v1/PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
}

// load renders root/dir and decodes each resource.
func load(root, dir string) (*manifests, []error) {
	docs, err := Render(filepath.Join(root, filepath.FromSlash(dir)))
	if err != nil {
		return nil, []error{fmt.Errorf("%s: %w", dir, err)}
	}
	m := &manifests{dir: dir}
	var errs []error
	for i, doc := range docs {
		obj, err := decodeStrict(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", dir, i+1, err))
			continue
		}
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			m.configMaps = append(m.configMaps, o)
		case *corev1.Secret:
			m.secrets = append(m.secrets, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *corev1.ServiceAccount:
			m.serviceAccounts = append(m.serviceAccounts, o)
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		case *appsv1.StatefulSet:
			m.statefulSets = append(m.statefulSets, o)
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, o)
		}
	}
	return m, errs
}

// decodeStrict decodes one YAML document into the k8s.io/api type of its
// kind. Unknown or duplicate fields fail, and field names match case
// sensitively (encoding/json alone would accept "livenessprobe").
func decodeStrict(doc []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %q (apiVersion %q) is not one this test knows", tm.Kind, tm.APIVersion)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// loadSecretExample decodes the example Secret, which is not part of any
// kustomization, and checks that it holds placeholders only.
func loadSecretExample(name string) (*corev1.Secret, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	obj, err := decodeStrict(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", exampleFile, err)
	}
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("%s: not a Secret", exampleFile)
	}
	if len(s.Data) > 0 {
		return nil, fmt.Errorf("%s: use stringData with placeholders, not data", exampleFile)
	}
	for k, v := range s.StringData {
		if !strings.HasPrefix(v, "REPLACE") {
			return nil, fmt.Errorf("%s: key %s: value is not a REPLACE_... placeholder: never commit a real secret", exampleFile, k)
		}
	}
	return s, nil
}

// checker collects the problems of one kustomization.
type checker struct {
	m       *manifests
	example *corev1.Secret // nil when it failed to load
	policy  policy
	errs    []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: "+format, append([]any{c.m.dir}, args...)...))
}

// workload is a pod template and what owns it.
type workload struct {
	kind, name string
	replicas   int32
	template   *corev1.PodTemplateSpec
	claims     []string // volumeClaimTemplates
}

func (w workload) String() string { return w.kind + "/" + w.name }

func (c *checker) workloads() []workload {
	var ws []workload
	for _, d := range c.m.deployments {
		ws = append(ws, workload{"Deployment", d.Name, replicas(d.Spec.Replicas), &d.Spec.Template, nil})
	}
	for _, s := range c.m.statefulSets {
		w := workload{"StatefulSet", s.Name, replicas(s.Spec.Replicas), &s.Spec.Template, nil}
		for _, pvc := range s.Spec.VolumeClaimTemplates {
			w.claims = append(w.claims, pvc.Name)
		}
		ws = append(ws, w)
	}
	return ws
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func (c *checker) check() {
	for _, s := range c.m.secrets {
		c.errorf("Secret %s is rendered: secrets are created by hand (see %s), never applied from the repository", s.Name, exampleFile)
	}
	for _, sa := range c.m.serviceAccounts {
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			c.errorf("ServiceAccount/%s: set automountServiceAccountToken: false (no pod here needs an API token)", sa.Name)
		}
	}
	for _, d := range c.m.deployments {
		c.checkSelector("Deployment/"+d.Name, d.Spec.Selector, d.Spec.Template.Labels)
	}
	for _, s := range c.m.statefulSets {
		c.checkSelector("StatefulSet/"+s.Name, s.Spec.Selector, s.Spec.Template.Labels)
		if c.service(s.Spec.ServiceName) == nil {
			c.errorf("StatefulSet/%s: serviceName %q names no Service", s.Name, s.Spec.ServiceName)
		}
		for _, pvc := range s.Spec.VolumeClaimTemplates {
			if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.IsZero() {
				c.errorf("StatefulSet/%s: volumeClaimTemplate %s requests no storage", s.Name, pvc.Name)
			}
		}
	}
	for _, w := range c.workloads() {
		c.checkPod(w)
	}
	c.checkServices()
	c.checkPDBs()

	var dep *appsv1.Deployment
	for _, d := range c.m.deployments {
		if d.Name == app {
			dep = d
		}
	}
	if dep == nil {
		c.errorf("no Deployment named %s", app)
		return
	}
	c.checkQueuewatch(dep)
}

func (c *checker) checkSelector(owner string, sel *metav1.LabelSelector, podLabels map[string]string) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	switch {
	case err != nil:
		c.errorf("%s: selector: %v", owner, err)
	case s.Empty():
		c.errorf("%s: empty selector", owner)
	case !s.Matches(labels.Set(podLabels)):
		c.errorf("%s: selector %s does not match its pod labels %v", owner, s, podLabels)
	}
}

// checkPod applies the Pod Security Standard "restricted" and this
// project's rules to every pod template.
func (c *checker) checkPod(w workload) {
	spec := &w.template.Spec
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		c.errorf("%s: host namespaces are not allowed", w)
	}
	// No Kubernetes API token: nothing here talks to the API server.
	automount := true
	if spec.ServiceAccountName != "" {
		sa := c.serviceAccount(spec.ServiceAccountName)
		if sa == nil {
			c.errorf("%s: serviceAccountName %q names no ServiceAccount", w, spec.ServiceAccountName)
		} else if sa.AutomountServiceAccountToken != nil {
			automount = *sa.AutomountServiceAccountToken
		}
	}
	if spec.AutomountServiceAccountToken != nil {
		automount = *spec.AutomountServiceAccountToken
	}
	if automount {
		c.errorf("%s: a service account token would be mounted: set automountServiceAccountToken: false", w)
	}
	volumes := slices.Clone(w.claims)
	for _, v := range spec.Volumes {
		volumes = append(volumes, v.Name)
		s := v.VolumeSource
		if s.ConfigMap == nil && s.Secret == nil && s.EmptyDir == nil && s.PersistentVolumeClaim == nil &&
			s.Projected == nil && s.DownwardAPI == nil && s.CSI == nil && s.Ephemeral == nil {
			c.errorf("%s: volume %s: a volume type the restricted Pod Security Standard forbids", w, v.Name)
		}
	}
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for i, ctr := range all {
		where := fmt.Sprintf("%s: container %s", w, ctr.Name)
		c.checkImage(where, ctr.Image)
		c.checkResources(where, ctr.Resources)
		c.checkSecurity(where, spec.SecurityContext, ctr.SecurityContext)
		for _, vm := range ctr.VolumeMounts {
			if !slices.Contains(volumes, vm.Name) {
				c.errorf("%s: volumeMount %s names no volume", where, vm.Name)
			}
		}
		if i >= len(spec.InitContainers) {
			if ctr.LivenessProbe == nil || ctr.ReadinessProbe == nil {
				c.errorf("%s: needs a livenessProbe and a readinessProbe", where)
			}
			for _, p := range []*corev1.Probe{ctr.StartupProbe, ctr.LivenessProbe, ctr.ReadinessProbe} {
				if p != nil && p.HTTPGet != nil && portNumber(ctr, p.HTTPGet.Port) == 0 {
					c.errorf("%s: probe port %q is not a port of the container", where, p.HTTPGet.Port.String())
				}
			}
		}
	}
}

// checkImage wants a tag other than latest, or a digest.
func (c *checker) checkImage(where, image string) {
	if strings.Contains(image, "@sha256:") {
		return
	}
	name := image[strings.LastIndex(image, "/")+1:]
	_, tag, ok := strings.Cut(name, ":")
	switch {
	case !ok || tag == "":
		c.errorf("%s: image %q has no tag: pin a version or a digest", where, image)
	case tag == "latest":
		c.errorf("%s: image %q uses latest: pin a version or a digest", where, image)
	}
}

func (c *checker) checkResources(where string, r corev1.ResourceRequirements) {
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r.Requests[res]; !ok || q.IsZero() {
			c.errorf("%s: resources.requests.%s is not set", where, res)
		}
		if q, ok := r.Limits[res]; !ok || q.IsZero() {
			c.errorf("%s: resources.limits.%s is not set", where, res)
		}
	}
}

// checkSecurity checks the effective security context (the container's
// settings over the pod's): the restricted Pod Security Standard plus a
// read-only root filesystem.
func (c *checker) checkSecurity(where string, pod *corev1.PodSecurityContext, ctr *corev1.SecurityContext) {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if ctr == nil {
		ctr = &corev1.SecurityContext{}
	}
	if !isTrue(firstSet(ctr.RunAsNonRoot, pod.RunAsNonRoot)) {
		c.errorf("%s: runAsNonRoot must be true", where)
	}
	if uid := firstSet(ctr.RunAsUser, pod.RunAsUser); uid != nil && *uid == 0 {
		c.errorf("%s: runAsUser must not be 0", where)
	}
	if ctr.AllowPrivilegeEscalation == nil || *ctr.AllowPrivilegeEscalation {
		c.errorf("%s: allowPrivilegeEscalation must be false", where)
	}
	if isTrue(ctr.Privileged) {
		c.errorf("%s: privileged", where)
	}
	if !isTrue(ctr.ReadOnlyRootFilesystem) {
		c.errorf("%s: readOnlyRootFilesystem must be true (mount an emptyDir where it writes)", where)
	}
	if ctr.Capabilities == nil || !slices.Contains(ctr.Capabilities.Drop, "ALL") {
		c.errorf("%s: capabilities must drop ALL", where)
	} else if len(ctr.Capabilities.Add) > 0 {
		c.errorf("%s: capabilities must add none, not %v", where, ctr.Capabilities.Add)
	}
	seccomp := ctr.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
		c.errorf("%s: seccompProfile must be RuntimeDefault", where)
	}
}

// firstSet returns the first non-nil pointer (the container's over the pod's).
func firstSet[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func isTrue(p *bool) bool { return p != nil && *p }

// portNumber resolves a probe or Service target port against a container's
// ports; 0 when it names none.
func portNumber(ctr corev1.Container, port intstr.IntOrString) int32 {
	for _, p := range ctr.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p.ContainerPort
		}
	}
	return 0
}

// checkServices wants every Service to select pods of this kustomization
// and every target port to exist; the queuewatch Service must carry the
// scrape annotations.
func (c *checker) checkServices() {
	for _, s := range c.m.services {
		if len(s.Spec.Selector) == 0 {
			c.errorf("Service/%s: no selector", s.Name)
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var matched []workload
		for _, w := range c.workloads() {
			if sel.Matches(labels.Set(w.template.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			c.errorf("Service/%s: selector %s matches no pod template", s.Name, sel)
			continue
		}
		for _, w := range matched {
			for _, p := range s.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port)
				}
				found := false
				for _, ctr := range w.template.Spec.Containers {
					found = found || portNumber(ctr, target) != 0
				}
				if !found {
					c.errorf("Service/%s: port %s: target port %s is not a port of %s", s.Name, p.Name, target.String(), w)
				}
			}
			if w.kind == "Deployment" && w.name == app {
				c.checkScrape(s, w)
			}
		}
	}
}

func (c *checker) checkScrape(s *corev1.Service, w workload) {
	a := s.Annotations
	if a["prometheus.io/scrape"] != "true" {
		c.errorf("Service/%s: annotation prometheus.io/scrape must be \"true\"", s.Name)
	}
	if a["prometheus.io/path"] != "/metrics" {
		c.errorf("Service/%s: annotation prometheus.io/path must be /metrics", s.Name)
	}
	var httpPort int32
	for _, ctr := range w.template.Spec.Containers {
		if ctr.Name == app {
			httpPort = portNumber(ctr, intstr.FromString("http"))
		}
	}
	if a["prometheus.io/port"] != strconv.Itoa(int(httpPort)) {
		c.errorf("Service/%s: annotation prometheus.io/port %q is not the container's http port %d", s.Name, a["prometheus.io/port"], httpPort)
	}
}

// checkPDBs wants every budget to select pods and to allow at least one
// voluntary disruption at the workload's replica count (otherwise node
// drains hang), and the queuewatch Deployment to have one.
func (c *checker) checkPDBs() {
	covered := false
	for _, p := range c.m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() {
			c.errorf("PodDisruptionBudget/%s: bad or empty selector", p.Name)
			continue
		}
		matched := false
		for _, w := range c.workloads() {
			if !sel.Matches(labels.Set(w.template.Labels)) {
				continue
			}
			matched = true
			covered = covered || (w.kind == "Deployment" && w.name == app)
			n := int(w.replicas)
			allowed := 0
			switch {
			case p.Spec.MaxUnavailable != nil:
				allowed, err = intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, n, true)
			case p.Spec.MinAvailable != nil:
				var minAvail int
				minAvail, err = intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, n, true)
				allowed = n - minAvail
			}
			if err != nil {
				c.errorf("PodDisruptionBudget/%s: %v", p.Name, err)
			} else if allowed < 1 {
				c.errorf("PodDisruptionBudget/%s: allows no disruption of %s at %d replicas: node drains would hang", p.Name, w, n)
			}
		}
		if !matched {
			c.errorf("PodDisruptionBudget/%s: selector %s matches no pod template", p.Name, sel)
		}
	}
	if !covered {
		c.errorf("no PodDisruptionBudget covers Deployment/%s", app)
	}
}

// checkQueuewatch checks the queuewatch Deployment: probes on served paths,
// the user, the environment (known variables, valid values), the grace
// period and the replicas.
func (c *checker) checkQueuewatch(d *appsv1.Deployment) {
	where := "Deployment/" + app
	if d.Spec.Template.Labels[nameLabel] != app {
		c.errorf("%s: pod label %s=%s missing", where, nameLabel, app)
	}
	if r := replicas(d.Spec.Replicas); r < c.policy.minReplicas {
		c.errorf("%s: replicas %d, want at least %d", where, r, c.policy.minReplicas)
	}
	spec := &d.Spec.Template.Spec
	if spec.ServiceAccountName == "" {
		c.errorf("%s: no serviceAccountName", where)
	}
	i := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == app })
	if i < 0 {
		c.errorf("%s: no container named %s", where, app)
		return
	}
	ctr := spec.Containers[i]
	where += ": container " + app

	var uid *int64
	if ctr.SecurityContext != nil {
		uid = ctr.SecurityContext.RunAsUser
	}
	if uid == nil && spec.SecurityContext != nil {
		uid = spec.SecurityContext.RunAsUser
	}
	if uid == nil || *uid != nonrootUID {
		c.errorf("%s: runAsUser must be %d (the image's nonroot user)", where, nonrootUID)
	}

	httpPort := portNumber(ctr, intstr.FromString("http"))
	if httpPort == 0 {
		c.errorf("%s: no port named http", where)
	}
	probes := []struct {
		name  string
		p     *corev1.Probe
		paths []string
	}{
		{"startupProbe", ctr.StartupProbe, livePaths},
		{"livenessProbe", ctr.LivenessProbe, livePaths},
		{"readinessProbe", ctr.ReadinessProbe, []string{"/readyz"}},
	}
	for _, pr := range probes {
		switch {
		case pr.p == nil:
			c.errorf("%s: no %s", where, pr.name)
		case pr.p.HTTPGet == nil:
			c.errorf("%s: %s must be an httpGet", where, pr.name)
		case !slices.Contains(servedPaths, pr.p.HTTPGet.Path):
			c.errorf("%s: %s path %q is not served by queuewatch (%v)", where, pr.name, pr.p.HTTPGet.Path, servedPaths)
		case !slices.Contains(pr.paths, pr.p.HTTPGet.Path):
			c.errorf("%s: %s must use one of %v, not %q (a liveness probe on /readyz restarts pods during a NATS outage)", where, pr.name, pr.paths, pr.p.HTTPGet.Path)
		case portNumber(ctr, pr.p.HTTPGet.Port) != httpPort:
			c.errorf("%s: %s port %q is not the http port", where, pr.name, pr.p.HTTPGet.Port.String())
		}
	}

	env := c.environment(where, ctr, spec)
	cfg, err := parseConfig(env)
	if err != nil {
		c.errorf("%s: queuewatch rejects its settings: %v", where, err)
		return
	}
	if cfg.EmbeddedNATS() {
		c.errorf("%s: QUEUEWATCH_NATS_URL is empty: the embedded NATS server is for local use; point it at NATS with JetStream", where)
	}
	c.checkNATSURL(where, cfg.NATSURL, cfg.Replicas)
	if cfg.Replicas < c.policy.minStreamReplicas {
		c.errorf("%s: QUEUEWATCH_REPLICAS=%d, want at least %d", where, cfg.Replicas, c.policy.minStreamReplicas)
	}
	if _, port, err := net.SplitHostPort(cfg.HTTPAddr); err != nil || port != strconv.Itoa(int(httpPort)) {
		c.errorf("%s: QUEUEWATCH_HTTP_ADDR %q does not listen on the http port %d", where, cfg.HTTPAddr, httpPort)
	}
	grace := int64(defaultGrace)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	if float64(grace) <= cfg.ShutdownGrace.Seconds() {
		c.errorf("%s: terminationGracePeriodSeconds %d must exceed QUEUEWATCH_SHUTDOWN_GRACE (%s)", where, grace, cfg.ShutdownGrace)
	}
}

// environment resolves the container's environment as the kubelet would
// (envFrom, then env), checking that every name is a variable queuewatch
// reads, that referenced ConfigMaps and Secret keys exist, and that file
// variables point into a volume mount. Values from Secrets are stand-ins;
// file variables point at an existing temporary file (see parseConfig).
func (c *checker) environment(where string, ctr corev1.Container, spec *corev1.PodSpec) map[string]string {
	known := make(map[string]bool)
	for _, v := range config.Vars() {
		known[v.Name] = true
	}
	checkName := func(name, from string) {
		if !known[name] && !slices.Contains(runtimeVars, name) {
			c.errorf("%s: %s sets %s, which is not a queuewatch variable (queuewatch --help lists them)", where, from, name)
		}
	}
	env := make(map[string]string)
	for _, ef := range ctr.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := c.configMap(ef.ConfigMapRef.Name)
			if cm == nil {
				if !isTrue(ef.ConfigMapRef.Optional) {
					c.errorf("%s: envFrom ConfigMap %q is not rendered", where, ef.ConfigMapRef.Name)
				}
				continue
			}
			for k, v := range cm.Data {
				checkName(ef.Prefix+k, "ConfigMap "+cm.Name)
				env[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			for _, k := range c.secretKeys(where, ef.SecretRef.Name) {
				checkName(ef.Prefix+k, "Secret "+ef.SecretRef.Name)
				env[ef.Prefix+k] = "secret-value"
			}
		}
	}
	for _, e := range ctr.Env {
		checkName(e.Name, "env")
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if !slices.Contains(c.secretKeys(where, ref.Name), ref.Key) {
				if !isTrue(ref.Optional) {
					c.errorf("%s: env %s: key %q is not in the Secret (%s)", where, e.Name, ref.Key, exampleFile)
				}
				delete(env, e.Name)
				continue
			}
			env[e.Name] = "secret-value"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := c.configMap(ref.Name)
			v, ok := "", false
			if cm != nil {
				v, ok = cm.Data[ref.Key]
			}
			if !ok && !isTrue(ref.Optional) {
				c.errorf("%s: env %s: ConfigMap %q has no key %q", where, e.Name, ref.Name, ref.Key)
			}
			if ok {
				env[e.Name] = v
			}
		}
	}
	// Secret volumes: the mounted keys must be in the Secret.
	for _, v := range spec.Volumes {
		if v.Secret == nil || isTrue(v.Secret.Optional) {
			continue
		}
		keys := c.secretKeys(where, v.Secret.SecretName)
		for _, it := range v.Secret.Items {
			if !slices.Contains(keys, it.Key) {
				c.errorf("%s: volume %s mounts key %q, which is not in the Secret (%s)", where, v.Name, it.Key, exampleFile)
			}
		}
	}
	for _, name := range fileVars {
		if p, ok := env[name]; ok && p != "" && !c.mounted(ctr, spec, p) {
			c.errorf("%s: %s=%s is not a file in a volume mount of the container", where, name, p)
		}
	}
	c.checkExampleUsed(where, ctr, spec)
	return env
}

// secretKeys returns the keys of the hand-made Secret, known from the
// example; other Secret names are errors.
func (c *checker) secretKeys(where, name string) []string {
	if c.example == nil {
		return nil
	}
	if name != c.example.Name {
		c.errorf("%s: Secret %q is not the one %s describes (%q)", where, name, exampleFile, c.example.Name)
		return nil
	}
	keys := make([]string, 0, len(c.example.StringData))
	for k := range c.example.StringData {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkExampleUsed wants every key of the example Secret to be used.
func (c *checker) checkExampleUsed(where string, ctr corev1.Container, spec *corev1.PodSpec) {
	if c.example == nil {
		return
	}
	used := make(map[string]bool)
	for _, e := range ctr.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			used[e.ValueFrom.SecretKeyRef.Key] = true
		}
	}
	for _, ef := range ctr.EnvFrom {
		if ef.SecretRef != nil {
			return // every key
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == c.example.Name {
			if len(v.Secret.Items) == 0 {
				return // every key
			}
			for _, it := range v.Secret.Items {
				used[it.Key] = true
			}
		}
	}
	for k := range c.example.StringData {
		if !used[k] {
			c.errorf("%s: key %q of %s is used by nothing", where, k, exampleFile)
		}
	}
}

// mounted reports whether path is a file that a volume mount provides: under
// the mount path and, for a Secret or ConfigMap volume with items, one of
// them.
func (c *checker) mounted(ctr corev1.Container, spec *corev1.PodSpec, p string) bool {
	for _, vm := range ctr.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(p), path.Clean(vm.MountPath)+"/")
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			var items []corev1.KeyToPath
			switch {
			case v.Secret != nil:
				items = v.Secret.Items
			case v.ConfigMap != nil:
				items = v.ConfigMap.Items
			}
			if len(items) == 0 {
				return true
			}
			for _, it := range items {
				if it.Path == rel {
					return true
				}
			}
		}
	}
	return false
}

// checkNATSURL wants a NATS URL naming a bare host (a Service in the same
// namespace) to name a Service of this kustomization with that port, and
// the stream replicas not to exceed the servers behind it.
func (c *checker) checkNATSURL(where, urls string, streamReplicas int) {
	for _, s := range strings.Split(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			continue // parseConfig reported it
		}
		host := u.Hostname()
		if host == "" || strings.Contains(host, ".") {
			continue // another namespace or outside the cluster
		}
		svc := c.service(host)
		if svc == nil && c.policy.partial {
			continue
		}
		if svc == nil {
			c.errorf("%s: QUEUEWATCH_NATS_URL names host %q, but no Service %q is rendered", where, host, host)
			continue
		}
		port := u.Port()
		if port == "" {
			port = "4222"
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			c.errorf("%s: Service %q has no port %s for QUEUEWATCH_NATS_URL", where, host, port)
		}
		servers := int32(0)
		for _, st := range c.m.statefulSets {
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(st.Spec.Template.Labels)) {
				servers += replicas(st.Spec.Replicas)
			}
		}
		if servers > 0 && int32(streamReplicas) > servers {
			c.errorf("%s: QUEUEWATCH_REPLICAS=%d but Service %q has %d NATS servers", where, streamReplicas, host, servers)
		}
	}
}

func (c *checker) service(name string) *corev1.Service {
	for _, s := range c.m.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (c *checker) serviceAccount(name string) *corev1.ServiceAccount {
	for _, s := range c.m.serviceAccounts {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (c *checker) configMap(name string) *corev1.ConfigMap {
	for _, cm := range c.m.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

// envMu serialises parseConfig, which sets the process environment.
var envMu sync.Mutex

// parseConfig runs queuewatch's own parsing and validation
// (config.Parse) on env, with every other QUEUEWATCH_* variable unset. File
// variables point at an existing empty temporary file, since their real
// paths exist only in the pod.
func parseConfig(env map[string]string) (*config.Config, error) {
	envMu.Lock()
	defer envMu.Unlock()
	f, err := os.CreateTemp("", "queuewatch-deploy-test-")
	if err != nil {
		return nil, err
	}
	_ = f.Close()
	defer os.Remove(f.Name())

	saved := make(map[string]*string)
	for _, v := range config.Vars() {
		if old, ok := os.LookupEnv(v.Name); ok {
			saved[v.Name] = &old
		} else {
			saved[v.Name] = nil
		}
		_ = os.Unsetenv(v.Name)
	}
	defer func() {
		for name, old := range saved {
			if old == nil {
				_ = os.Unsetenv(name)
			} else {
				_ = os.Setenv(name, *old)
			}
		}
	}()
	for name, v := range env {
		if !strings.HasPrefix(name, "QUEUEWATCH_") {
			continue
		}
		if slices.Contains(fileVars, name) && v != "" {
			v = f.Name()
		}
		if _, ok := saved[name]; !ok {
			continue // unknown: reported by environment
		}
		if err := os.Setenv(name, v); err != nil {
			return nil, err
		}
	}
	return config.Parse()
}
