"""Operations: request ids, structured logs, Prometheus metrics, and the health endpoints."""
