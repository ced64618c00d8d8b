"""The node's HTTP API: peer links, HTTP ingress dispatch, the admin API, metrics."""
