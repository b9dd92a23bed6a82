from m3bng.cli import main

main()
