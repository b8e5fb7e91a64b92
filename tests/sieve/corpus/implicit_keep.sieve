# nothing to do: the implicit keep stores the message
