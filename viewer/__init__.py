"""Browser viewer of a trained model (``python view.py -m MODEL``): viser splats coloured by RGB, object
or class, click-to-pick, isolate / hide / export, training cameras. ``picking`` and ``colours`` are
pure tensor code; ``data`` loads a model through ``tools.objects``; ``app`` is the viser side."""
