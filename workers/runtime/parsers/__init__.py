"""Output parsers of ORCA, xtb and AutoDock Vina, one module per program.

Every parser is `def name(text: str) -> dict`: the whole text of one stream or file in, named
values `{"energy": {"value": -382.05, "unit": "Eh"}}` out, or `errors.ParseError` with one line
saying what is missing or wrong. They are reached by name through `registry.PARSERS`.
"""
