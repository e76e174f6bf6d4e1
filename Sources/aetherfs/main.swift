import AetherCLI

AetherCommand.run()
