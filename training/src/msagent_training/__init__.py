"""msagent training: verl tools, agent loop, reward and dataset builders."""
