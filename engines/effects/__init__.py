"""Frame effects: the last stage of the pipeline.

Use :func:`engines.effects.registry.build_effect` to make one by name.
"""
