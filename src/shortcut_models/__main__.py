from shortcut_models.entry import run

raise SystemExit(run())
