cwlVersion: v1.2
class: Workflow
doc: A subworkflow of two steps; the first stages its input with InitialWorkDirRequirement.
inputs:
  words: File
outputs:
  counts:
    type: File
    outputSource: tally/counts
steps:
  stage:
    run:
      class: CommandLineTool
      requirements:
        InitialWorkDirRequirement:
          listing:
            - entryname: staged.txt
              entry: $(inputs.words)
      inputs:
        words: File
      baseCommand: [sort, staged.txt]
      stdout: sorted.txt
      outputs:
        sorted:
          type: stdout
    in:
      words: words
    out: [sorted]
  tally:
    run:
      class: CommandLineTool
      inputs:
        sorted:
          type: File
          inputBinding:
            position: 1
      baseCommand: [uniq, -c]
      stdout: counts.txt
      outputs:
        counts:
          type: stdout
    in:
      sorted: stage/sorted
    out: [counts]
