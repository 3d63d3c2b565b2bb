"""Model families (pure torch): built by `rrsis.models.registry.build_model`."""
