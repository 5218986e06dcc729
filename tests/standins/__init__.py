"""Stand-ins for programs that cannot be installed here, and test records."""
