"""Reference solutions of the course exercises, one module per chapter."""
