# Build the Windows one-folder executables (dist\nvir-agent\) with PyInstaller and CPU
# torch, smoke-test them, then the per-user installer with Inno Setup 6.
#
# Run on Windows 10/11 x64 from the repository root or anywhere:
#   powershell -ExecutionPolicy Bypass -File installer\windows\build.ps1 [-SkipSetup] [-SkipSmoke]
# Needs: Python 3.11 x64 (the `py` launcher), Inno Setup 6 (ISCC.exe; `winget install
# JRSoftware.InnoSetup`) unless -SkipSetup. Torch wheels for Windows on PyPI are CPU
# builds, so no extra index is needed.
param([switch]$SkipSetup, [switch]$SkipSmoke, [string]$Python = "3.11")
$ErrorActionPreference = "Stop"
Set-Location (Resolve-Path (Join-Path $PSScriptRoot "..\.."))

function Invoke-Checked([string]$exe, [string[]]$arguments) {
    & $exe @arguments
    if ($LASTEXITCODE -ne 0) { throw "$exe $($arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

$watch = [Diagnostics.Stopwatch]::StartNew()
$venv = "build\pyi-venv"
if (-not (Test-Path "$venv\Scripts\python.exe")) { Invoke-Checked "py" @("-$Python", "-m", "venv", $venv) }
$py = "$venv\Scripts\python.exe"
Invoke-Checked $py @("-m", "pip", "install", "-q", "--upgrade", "pip")
Invoke-Checked $py @("-m", "pip", "install", "-q", "torch", "torchvision")
Invoke-Checked $py @("-m", "pip", "install", "-q", ".", "pyinstaller")
Invoke-Checked $py @("-m", "PyInstaller", "--noconfirm", "--clean", "--distpath", "dist",
                     "--workpath", "build\pyinstaller", "installer\pyinstaller\nvir-agent.spec")
$size = (Get-ChildItem dist\nvir-agent -Recurse -File | Measure-Object Length -Sum).Sum / 1MB
Write-Host ("built dist\nvir-agent in {0:N0} s, {1:N0} MB" -f $watch.Elapsed.TotalSeconds, $size)

$version = (& dist\nvir-agent\nvir-agent.exe --version).Split(" ")[-1]
if ($LASTEXITCODE -ne 0) { throw "dist\nvir-agent\nvir-agent.exe --version failed" }
if (-not $SkipSmoke) {
    $demo = Join-Path $env:TEMP "nvir-agent-smoke-$PID"
    Invoke-Checked "dist\nvir-agent\nvir-agent.exe" @("demo", "--headless", "--fast", "--days", "3",
        "--size", "256", "--compounds", "Fictazine", "--keep", $demo)
    if (-not (Test-Path "$demo\nvir-demo-report.html")) { throw "the demo wrote no report in $demo" }
    Remove-Item -Recurse -Force $demo
}
if (-not $SkipSetup) {
    $iscc = Join-Path ${env:ProgramFiles(x86)} "Inno Setup 6\ISCC.exe"
    if (-not (Test-Path $iscc)) { $iscc = "ISCC.exe" }
    Invoke-Checked $iscc @("/DAppVersion=$version", "installer\windows\nvir-agent.iss")
    Write-Host "installer: dist\nvir-agent-$version-setup.exe"
}
