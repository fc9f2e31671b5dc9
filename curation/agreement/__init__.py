"""Stage ``agreement``: inter-annotator agreement, consensus, disputes and pre-label quality.

``stage.agreement`` is the pure core, ``stage.write_agreement`` writes the outputs, ``cli.agreement_command`` is
the typer command; ``metrics``, ``consensus``, ``quality`` and ``report`` hold the pieces.
"""
