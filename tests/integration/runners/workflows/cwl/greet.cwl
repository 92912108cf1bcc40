cwlVersion: v1.2
class: CommandLineTool
doc: A JavaScript expression and a shell pipeline (needs node on the agents).
requirements:
  InlineJavascriptRequirement: {}
  ShellCommandRequirement: {}
inputs:
  name: string
arguments:
  - shellQuote: false
    valueFrom: >
      echo "Hello $(inputs.name.toUpperCase() + '!')" | tr '!' . > $(inputs.name).txt
outputs:
  greeting:
    type: File
    outputBinding:
      glob: $(inputs.name + ".txt")
