"""sparsetune's HTTP service: auth, validation and reading rows; it never trains or imports torch."""
