"""TLS: Consul-style CA and certificates (beacon tls), and the agent's TLS settings."""
