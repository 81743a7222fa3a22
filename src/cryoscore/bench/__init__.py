"""Benchmarks that judge denoisers as users do: picking, 3D reconstruction, pixel metrics, bias controls."""
