from beacon.cli.main import main

raise SystemExit(main())
