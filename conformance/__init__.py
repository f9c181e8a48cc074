"""The open conformance suite's pytest entry (a package, so its conftest never shadows tests/')."""
