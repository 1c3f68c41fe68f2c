from quantized_cli.main import main

main()
