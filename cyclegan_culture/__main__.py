from cyclegan_culture.cli import main

raise SystemExit(main())
