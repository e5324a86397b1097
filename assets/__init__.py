"""Data files shipped inside the package as ``synth.assets`` (the top-level ``assets/`` folder of the checkout).

Read them with :func:`synth.paths.asset_path`.
"""
