"""Test bed: real Kubernetes, etcd, Flux and Helm binaries built from the Go module proxy."""
