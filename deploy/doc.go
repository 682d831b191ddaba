// Package deploy holds queuewatch's Kubernetes manifests; its test renders them.
//
// base/ is a Kustomize base (Deployment, ServiceAccount, ConfigMap, metrics
// Service, PodDisruptionBudget), overlays/dev adds a single-node NATS with
// JetStream, overlays/prod runs three replicas against an existing JetStream
// cluster. Render is the kustomize API as `kubectl kustomize` runs it; the
// render command (go run ./deploy/render) and the tests use it.
package deploy
