cwlVersion: v1.2
class: CommandLineTool
doc: Reads an input's secondary file, which must be staged beside it.
inputs:
  indexed:
    type: File
    secondaryFiles: [.idx]
    inputBinding:
      position: 1
baseCommand: [sh, -c, 'cat "$1.idx" "$1"', lookup]
stdout: found.txt
outputs:
  found:
    type: stdout
