"""Models of what Terraform, Helm and the cluster do with a synthesized stack over time, each
written from the upstream source it cites, for the lifecycle gates in tests/lifecycle/test_*.py."""
