from pfnkit.cli import main

main()
