"""One bridge conformance suite (tests.conformance.base), one subclass per bridge."""
