from shortcut_models.cli import main

raise SystemExit(main())
