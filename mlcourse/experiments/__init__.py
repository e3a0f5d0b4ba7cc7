"""Experiments at the papers' scale, one module per chapter, run by ``python -m mlcourse.reproduce``.

A module registers each experiment with :func:`mlcourse.reproduce.experiment`::

    @experiment("maml-sinusoid", title="...", paper="finn2017maml", gpu_minutes=2)
    def maml_sinusoid(scale: str, device) -> dict:
        ...   # scale is "paper", "book" or "quick"
        return {"metrics": {"mse_1_step": {"value": 0.4, "ci95": 0.05, "paper": None, "unit": "MSE"}},
                "settings": {...}, "notes": "..."}
"""
