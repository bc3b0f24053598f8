"""The metric registry (every metric declared once: key, label, unit, direction, where it is shown) and the
portfolio measures it computes with. A new metric goes into ``registry`` (its computation into
``measures``). Imports nothing else of ``trainer``.
"""
