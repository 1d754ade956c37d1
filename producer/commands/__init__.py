"""The `producer` CLI's commands, one module per noun, each a few lines over the Python API;
``producer/cli.py`` assembles them in the order `producer --help` lists them."""
