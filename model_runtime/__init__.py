"""What the Python-backend models of the repository run: classifier engines and request-path timing."""
