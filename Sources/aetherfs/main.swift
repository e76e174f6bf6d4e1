import AetherCLI
