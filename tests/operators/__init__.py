"""Unit tests of hub.operators: the operator actions the admin API and the CLI share."""
